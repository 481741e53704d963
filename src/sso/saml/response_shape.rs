//! The shape a SAML Response must have before its signature is even checked. Signature
//! wrapping (XSW) works by giving the verifier one element and the reader another: a second
//! Assertion beside, inside or around the signed one, a copy under `ds:Object`, or two
//! elements with the same ID. A Response passes only when the whole document holds exactly one
//! Response (the root), exactly one Assertion or EncryptedAssertion (a direct child of it) and
//! no ID twice. Nothing read here is trusted: it only refuses, or picks which provider's keys
//! to verify with (the values are hints until samael has verified the element they come from).

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use roxmltree::{Document, Node, ParsingOptions};

const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const XMLENC: &str = "http://www.w3.org/2001/04/xmlenc#";

/// The encryption algorithms samael can decrypt with; RSA PKCS#1 v1.5 key transport is left
/// out on purpose (padding-oracle attacks).
pub(crate) const ENCRYPTION: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
];

/// Unverified facts about a Response that passed the shape check.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Hints {
    /// The Response's InResponseTo: which of our requests it claims to answer.
    pub in_response_to: Option<String>,
    /// The Response's (or else the Assertion's) Issuer: which IdP it claims to come from.
    pub issuer: Option<String>,
    /// The Response's Destination, when present.
    pub destination: Option<String>,
    /// The assertion arrived encrypted.
    pub encrypted: bool,
}

/// Checks the shape; the error says what is wrong, for the log.
pub(crate) fn check(xml: &str) -> Result<Hints, String> {
    let doc = Document::parse_with_options(
        xml,
        ParsingOptions {
            allow_dtd: false,
            ..ParsingOptions::default()
        },
    )
    .map_err(|e| format!("not well-formed XML without a DTD: {e}"))?;
    let root = doc.root_element();
    if !is(root, PROTOCOL, "Response") {
        return Err("the root element is not a samlp:Response".into());
    }
    let mut ids = HashSet::new();
    let mut responses = 0usize;
    let mut assertions = Vec::new();
    for node in doc.descendants().filter(Node::is_element) {
        for attr in node.attributes() {
            if attr.namespace().is_none()
                && matches!(attr.name(), "ID" | "Id" | "id")
                && !ids.insert(attr.value())
            {
                return Err(format!("the ID {:?} appears twice", attr.value()));
            }
        }
        if is(node, PROTOCOL, "Response") {
            responses += 1;
        }
        if is(node, ASSERTION, "Assertion") || is(node, ASSERTION, "EncryptedAssertion") {
            assertions.push(node);
        }
        // An Assertion under a foreign namespace is what a reader matching local names only
        // would take for the real one.
        if node.tag_name().name().ends_with("Assertion")
            && !matches!(node.tag_name().namespace(), Some(ASSERTION))
        {
            return Err("an Assertion element outside the SAML assertion namespace".into());
        }
    }
    if responses != 1 {
        return Err(format!(
            "{responses} Response elements (exactly one allowed)"
        ));
    }
    let [assertion] = assertions[..] else {
        return Err(format!(
            "{} Assertion/EncryptedAssertion elements (exactly one allowed)",
            assertions.len()
        ));
    };
    if assertion.parent_element() != Some(root) {
        return Err("the Assertion is not a direct child of the Response".into());
    }
    let encrypted = assertion.tag_name().name() == "EncryptedAssertion";
    if encrypted {
        check_encryption(assertion)?;
    }
    let issuer_of = |n: Node| {
        n.children()
            .find(|c| is(*c, ASSERTION, "Issuer"))
            .and_then(|i| i.text())
            .map(|t| t.trim().to_string())
    };
    Ok(Hints {
        in_response_to: root.attribute("InResponseTo").map(str::to_string),
        issuer: issuer_of(root).or_else(|| (!encrypted).then(|| issuer_of(assertion)).flatten()),
        destination: root.attribute("Destination").map(str::to_string),
        encrypted,
    })
}

/// The algorithms must be ones we accept, and the cipher values long enough to hold an IV and
/// a tag: samael slices them without checking.
fn check_encryption(encrypted: Node) -> Result<(), String> {
    for node in encrypted.descendants().filter(Node::is_element) {
        if is(node, XMLENC, "EncryptionMethod") {
            let alg = node.attribute("Algorithm").unwrap_or("");
            if !ENCRYPTION.contains(&alg) {
                return Err(format!("encryption algorithm {alg:?} is not accepted"));
            }
        }
        if is(node, XMLENC, "CipherValue") {
            let text: String = node
                .text()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let bytes = STANDARD
                .decode(text.as_bytes())
                .map_err(|_| "a CipherValue is not base64".to_string())?;
            if bytes.len() < 32 {
                return Err("a CipherValue is too short".into());
            }
        }
    }
    Ok(())
}

fn is(node: Node, namespace: &str, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(inner: &str) -> String {
        format!(
            "<samlp:Response xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" \
             xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" ID=\"_r\" InResponseTo=\"_q\" \
             Destination=\"https://sp/acs\"><saml:Issuer>https://idp</saml:Issuer>{inner}\
             </samlp:Response>"
        )
    }

    const ASSERTION_A: &str =
        "<saml:Assertion ID=\"_a\"><saml:Issuer>https://idp</saml:Issuer></saml:Assertion>";
    const ASSERTION_B: &str =
        "<saml:Assertion ID=\"_b\"><saml:Issuer>https://idp</saml:Issuer></saml:Assertion>";

    #[test]
    fn one_direct_assertion_passes_with_hints() {
        let hints = check(&response(ASSERTION_A)).unwrap();
        assert_eq!(hints.in_response_to.as_deref(), Some("_q"));
        assert_eq!(hints.issuer.as_deref(), Some("https://idp"));
        assert_eq!(hints.destination.as_deref(), Some("https://sp/acs"));
        assert!(!hints.encrypted);
    }

    #[test]
    fn wrapping_shapes_are_refused() {
        let cases = [
            // two assertions side by side (XSW 3/4 style)
            response(&format!("{ASSERTION_A}{ASSERTION_B}")),
            // an assertion inside the assertion
            response(&format!(
                "<saml:Assertion ID=\"_a\">{ASSERTION_B}</saml:Assertion>"
            )),
            // a copy hidden under ds:Object (XSW 7/8 style)
            response(&format!(
                "<ds:Signature><ds:Object>{ASSERTION_B}</ds:Object></ds:Signature>{ASSERTION_A}"
            )),
            // the signed Response wrapped inside a new one (XSW 1/2 style)
            response(&format!(
                "<ds:Object>{}</ds:Object>",
                response(ASSERTION_A).replace("_r", "_r2")
            )),
            // the same ID twice
            response(&ASSERTION_A.replace("_a", "_r")),
            // an Assertion of a foreign namespace
            response("<x:Assertion xmlns:x=\"urn:evil\" ID=\"_x\"/>"),
            // no assertion at all
            response(""),
        ];
        for (i, xml) in cases.iter().enumerate() {
            assert!(check(xml).is_err(), "case {i} passed: {xml}");
        }
    }

    #[test]
    fn not_a_response_and_dtds_are_refused() {
        assert!(check(ASSERTION_A).is_err());
        let dtd = format!("<!DOCTYPE r [<!ENTITY e \"x\">]>{}", response(ASSERTION_A));
        assert!(check(&dtd).is_err());
        assert!(check("<samlp:Response").is_err());
    }

    #[test]
    fn encrypted_assertion_algorithms_and_lengths() {
        let enc = |alg: &str, value: &str| {
            response(&format!(
                "<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc=\"{XMLENC}\">\
                 <xenc:EncryptionMethod Algorithm=\"{alg}\"/><xenc:CipherData>\
                 <xenc:CipherValue>{value}</xenc:CipherValue></xenc:CipherData>\
                 </xenc:EncryptedData></saml:EncryptedAssertion>"
            ))
        };
        let long = STANDARD.encode([7u8; 48]);
        let hints = check(&enc("http://www.w3.org/2001/04/xmlenc#aes128-cbc", &long)).unwrap();
        assert!(hints.encrypted);
        assert!(check(&enc("http://www.w3.org/2001/04/xmlenc#rsa-1_5", &long)).is_err());
        assert!(check(&enc("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "AAAA")).is_err());
    }
}
