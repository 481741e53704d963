//! Hostile SAML Responses, each made by mutating a real signed Response from SimpleSAMLphp:
//! signatures stripped, the content changed and signed again with the IdP's own key (so only
//! the rule under test can refuse it), signed with another key, or wrapped in the known
//! signature-wrapping (XSW) shapes.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use samael::crypto::{Crypto, CryptoProvider};

pub fn decode(b64: &str) -> String {
    String::from_utf8(STANDARD.decode(b64.trim()).unwrap()).unwrap()
}

pub fn encode(xml: &str) -> String {
    STANDARD.encode(xml.as_bytes())
}

/// The byte range of the first `<ds:Signature ...>...</ds:Signature>` at or after `from`.
fn signature_range(xml: &str, from: usize) -> Option<(usize, usize)> {
    let start = from + xml[from..].find("<ds:Signature")?;
    let end = start + xml[start..].find("</ds:Signature>")? + "</ds:Signature>".len();
    Some((start, end))
}

/// Every ds:Signature removed.
pub fn strip_signatures(xml: &str) -> String {
    let mut out = xml.to_string();
    while let Some((s, e)) = signature_range(&out, 0) {
        out.replace_range(s..e, "");
    }
    out
}

/// The Assertion's own signature removed (the Response's stays).
pub fn strip_assertion_signature(xml: &str) -> String {
    let at = xml.find("<saml:Assertion").expect("an assertion");
    let mut out = xml.to_string();
    if let Some((s, e)) = signature_range(&out, at) {
        out.replace_range(s..e, "");
    }
    out
}

/// The Response's own signature removed (the Assertion's stays).
pub fn strip_response_signature(xml: &str) -> String {
    let at = xml.find("<saml:Assertion").expect("an assertion");
    let mut out = xml.to_string();
    if let Some((s, e)) = signature_range(&out, 0).filter(|(s, _)| *s < at) {
        out.replace_range(s..e, "");
    }
    out
}

/// Signs the Response again (its own signature element is reused as the template) with the key
/// in `key_pem`, after dropping the Assertion's signature: what an IdP holding that key could
/// send.
pub fn resign_response(xml: &str, key_pem: &Path) -> String {
    let xml = strip_assertion_signature(xml);
    let pem = std::fs::read(key_pem).unwrap();
    let der = openssl::pkey::PKey::private_key_from_pem(&pem)
        .unwrap()
        .private_key_to_der()
        .unwrap();
    Crypto::sign_xml(xml, &der).expect("re-sign the response")
}

/// Replaces the first match of `from` with `to`, asserting it was there.
pub fn edit(xml: &str, from: &str, to: &str) -> String {
    assert!(xml.contains(from), "{from:?} is not in the response");
    xml.replacen(from, to, 1)
}

/// The value of attribute `name` on the first element that has it.
pub fn attr(xml: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    let at = xml
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} attribute"))
        + key.len();
    xml[at..at + xml[at..].find('"').unwrap()].to_string()
}

/// The whole `<saml:Assertion ...>...</saml:Assertion>` element.
pub fn assertion(xml: &str) -> String {
    let s = xml.find("<saml:Assertion").unwrap();
    let e = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    xml[s..e].to_string()
}

/// An unsigned copy of the assertion naming `admin` instead, with its own ID.
pub fn evil_assertion(xml: &str) -> String {
    let original = assertion(xml);
    let id = attr(&original, "ID");
    strip_signatures(&original)
        .replace(&id, "_evil0000000000000000000000000000")
        .replace(">student1<", ">admin<")
}

/// The known signature-wrapping shapes, by name.
pub fn wrapping_variants(xml: &str) -> Vec<(&'static str, String)> {
    let original = assertion(xml);
    let evil = evil_assertion(xml);
    let response_id = attr(xml, "ID");
    let root_end = xml.find('>').unwrap() + 1;
    let mut variants = Vec::new();
    // XSW1/2: a new unsigned Response around (or beside) the signed one.
    let mut outer = xml[..root_end].replacen(&response_id, "_evilresponse00000000000000000000", 1);
    outer.push_str(&format!(
        "<saml:Issuer>{}</saml:Issuer>{evil}{}</samlp:Response>",
        issuer(xml),
        xml
    ));
    variants.push(("xsw1-response-wrapped", outer));
    // XSW3: an evil assertion before the signed one.
    variants.push((
        "xsw3-assertion-before",
        xml.replacen(&original, &format!("{evil}{original}"), 1),
    ));
    // XSW4: the signed assertion moved inside the evil one.
    let nested = evil.replacen(
        "</saml:Assertion>",
        &format!("{original}</saml:Assertion>"),
        1,
    );
    variants.push((
        "xsw4-assertion-inside-evil",
        xml.replacen(&original, &nested, 1),
    ));
    // XSW5/6: the evil assertion carries the signature; the signed one is hidden after it.
    variants.push((
        "xsw5-assertion-after",
        xml.replacen(&original, &format!("{original}{evil}"), 1),
    ));
    // XSW7: the signed assertion hidden in an Extensions element.
    variants.push((
        "xsw7-extensions",
        xml.replacen(
            &original,
            &format!("<samlp:Extensions>{original}</samlp:Extensions>{evil}"),
            1,
        ),
    ));
    // XSW8: the signed assertion hidden in a ds:Object of the evil assertion's signature.
    let sig = signature_range(&original, 0)
        .map(|(s, e)| original[s..e].to_string())
        .unwrap_or_default();
    let with_object = sig.replacen(
        "</ds:Signature>",
        &format!("<ds:Object>{original}</ds:Object></ds:Signature>"),
        1,
    );
    let evil8 = evil.replacen("</saml:Issuer>", &format!("</saml:Issuer>{with_object}"), 1);
    variants.push(("xsw8-object", xml.replacen(&original, &evil8, 1)));
    // Content swapped under the old signatures.
    variants.push(("content-changed", xml.replace(">student1<", ">admin<")));
    variants
}

fn issuer(xml: &str) -> String {
    let s = xml.find("<saml:Issuer>").unwrap() + "<saml:Issuer>".len();
    xml[s..s + xml[s..].find('<').unwrap()].to_string()
}

pub fn encode_bytes(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Every `name="..."` attribute set to `value`.
pub fn set_all_attr(xml: &str, name: &str, value: &str) -> String {
    let key = format!(" {name}=\"");
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find(&key) {
        let start = at + key.len();
        let end = start + rest[start..].find('"').unwrap();
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
