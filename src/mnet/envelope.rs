//! The two MNet envelopes, read and written as Moodle's mnet_sign_message() and
//! mnet_encrypt_message() make them:
//!
//! * `signedMessage`: the base64 XML-RPC text in `<object>`, its RSA-SHA1 signature in
//!   `<SignatureValue>`, and the sender's `<wwwroot>` and `<timestamp>` (both unsigned);
//! * `encryptedMessage`: the RC4 ciphertext (first `<CipherValue>`, in `<EncryptedData>`), the
//!   RSA-wrapped RC4 key (second, in `<EncryptedKey>`) and the sender's `<wwwroot>`.
//!
//! Moodle's own parser collects these elements by name wherever they appear and concatenates
//! repeats, so every significant name is counted over the whole document and must appear
//! exactly where and as often as Moodle writes it.

use base64::Engine as _;
use roxmltree::{Document, Node};
use thiserror::Error;

use super::xml::{self, XmlError, XmlLimits};

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("<{name}> appears {found} times in the envelope, expected {expected}")]
    Repeated {
        name: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("<{0}> is not valid base64")]
    Base64(&'static str),
    #[error("<timestamp> is not a number of seconds")]
    Timestamp,
    #[error("<EncryptedData> must come before <EncryptedKey>")]
    Order,
}

/// A `signedMessage`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedMessage {
    /// The XML-RPC text that was signed.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    pub wwwroot: String,
    pub timestamp: i64,
}

/// An `encryptedMessage`, decoded (still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncryptedMessage {
    pub data: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub wwwroot: String,
}

/// Which envelope a body is, from its root element, as Moodle's server.php peeks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Encrypted,
    Signed,
    /// Anything else: a plain XML-RPC call (only `system/keyswap` may come so).
    Plain,
}

pub(crate) fn kind(text: &str) -> Kind {
    let head = &text.as_bytes()[..text.len().min(200)];
    if memchr::memmem::find(head, b"<encryptedMessage").is_some() {
        Kind::Encrypted
    } else if memchr::memmem::find(head, b"<signedMessage").is_some() {
        Kind::Signed
    } else {
        Kind::Plain
    }
}

fn count(doc: &Document<'_>, name: &str) -> usize {
    doc.descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == name)
        .count()
}

fn exactly(doc: &Document<'_>, name: &'static str, expected: usize) -> Result<(), EnvelopeError> {
    let found = count(doc, name);
    if found != expected {
        return Err(EnvelopeError::Repeated {
            name,
            found,
            expected,
        });
    }
    Ok(())
}

fn b64(node: Node<'_, '_>, name: &'static str) -> Result<Vec<u8>, EnvelopeError> {
    let text: String = xml::text(node)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| EnvelopeError::Base64(name))?;
    if bytes.is_empty() {
        return Err(EnvelopeError::Base64(name));
    }
    Ok(bytes)
}

pub(crate) fn parse_signed(text: &str, limits: &XmlLimits) -> Result<SignedMessage, EnvelopeError> {
    let doc = xml::parse(text, limits)?;
    let root = xml::root(&doc, "signedMessage")?;
    for (name, n) in [
        ("signedMessage", 1),
        ("Signature", 1),
        ("SignatureValue", 1),
        ("object", 1),
        ("wwwroot", 1),
        ("timestamp", 1),
    ] {
        exactly(&doc, name, n)?;
    }
    let signature = xml::only(xml::only(root, "Signature")?, "SignatureValue")?;
    let object = xml::only(root, "object")?;
    let wwwroot = xml::text(xml::only(root, "wwwroot")?)?.trim().to_string();
    let timestamp = xml::text(xml::only(root, "timestamp")?)?;
    let timestamp = timestamp.trim();
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EnvelopeError::Timestamp);
    }
    Ok(SignedMessage {
        payload: b64(object, "object")?,
        signature: b64(signature, "SignatureValue")?,
        wwwroot,
        timestamp: timestamp.parse().map_err(|_| EnvelopeError::Timestamp)?,
    })
}

pub(crate) fn parse_encrypted(
    text: &str,
    limits: &XmlLimits,
) -> Result<EncryptedMessage, EnvelopeError> {
    let doc = xml::parse(text, limits)?;
    let root = xml::root(&doc, "encryptedMessage")?;
    for (name, n) in [
        ("encryptedMessage", 1),
        ("EncryptedData", 1),
        ("EncryptedKey", 1),
        ("CipherData", 2),
        ("CipherValue", 2),
        ("wwwroot", 1),
    ] {
        exactly(&doc, name, n)?;
    }
    let data = xml::only(root, "EncryptedData")?;
    let key = xml::only(root, "EncryptedKey")?;
    if key.range().start < data.range().start {
        return Err(EnvelopeError::Order);
    }
    let data_value = xml::only(xml::only(data, "CipherData")?, "CipherValue")?;
    let key_value = xml::only(xml::only(key, "CipherData")?, "CipherValue")?;
    Ok(EncryptedMessage {
        data: b64(data_value, "CipherValue")?,
        wrapped_key: b64(key_value, "CipherValue")?,
        wwwroot: xml::text(xml::only(root, "wwwroot")?)?.trim().to_string(),
    })
}

fn b64e(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `signedMessage` laid out as Moodle's mnet_sign_message() writes it. `site_wwwroot` names
/// where the signer's public key is published.
pub(crate) fn write_signed(
    payload: &[u8],
    signature: &[u8],
    site_wwwroot: &str,
    timestamp: i64,
) -> String {
    use sha1::Digest as _;
    let digest = hex::encode(sha1::Sha1::digest(payload));
    let wwwroot = xml::escape(site_wwwroot);
    format!(
        r##"<?xml version="1.0" encoding="iso-8859-1"?>
    <signedMessage>
        <Signature Id="MoodleSignature" xmlns="http://www.w3.org/2000/09/xmldsig#">
            <SignedInfo>
                <CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
                <SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"/>
                <Reference URI="#XMLRPC-MSG">
                    <DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/>
                    <DigestValue>{digest}</DigestValue>
                </Reference>
            </SignedInfo>
            <SignatureValue>{sig}</SignatureValue>
            <KeyInfo>
                <RetrievalMethod URI="{wwwroot}/mnet/publickey.php"/>
            </KeyInfo>
        </Signature>
        <object ID="XMLRPC-MSG">{obj}</object>
        <wwwroot>{wwwroot}</wwwroot>
        <timestamp>{timestamp}</timestamp>
    </signedMessage>"##,
        sig = b64e(signature),
        obj = b64e(payload),
    )
}

/// An `encryptedMessage` laid out as Moodle's mnet_encrypt_message() writes it.
pub(crate) fn write_encrypted(data: &[u8], wrapped_key: &[u8], site_wwwroot: &str) -> String {
    format!(
        r##"<?xml version="1.0" encoding="iso-8859-1"?>
    <encryptedMessage>
        <EncryptedData Id="ED" xmlns="http://www.w3.org/2001/04/xmlenc#">
            <EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#arcfour"/>
            <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
                <ds:RetrievalMethod URI="#EK" Type="http://www.w3.org/2001/04/xmlenc#EncryptedKey"/>
                <ds:KeyName>XMLENC</ds:KeyName>
            </ds:KeyInfo>
            <CipherData>
                <CipherValue>{data}</CipherValue>
            </CipherData>
        </EncryptedData>
        <EncryptedKey Id="EK" xmlns="http://www.w3.org/2001/04/xmlenc#">
            <EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-1_5"/>
            <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
                <ds:KeyName>SSLKEY</ds:KeyName>
            </ds:KeyInfo>
            <CipherData>
                <CipherValue>{key}</CipherValue>
            </CipherData>
            <ReferenceList>
                <DataReference URI="#ED"/>
            </ReferenceList>
            <CarriedKeyName>XMLENC</CarriedKeyName>
        </EncryptedKey>
        <wwwroot>{wwwroot}</wwwroot>
    </encryptedMessage>"##,
        data = b64e(data),
        key = b64e(wrapped_key),
        wwwroot = xml::escape(site_wwwroot),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> XmlLimits {
        XmlLimits::default()
    }

    #[test]
    fn signed_round_trip() {
        let text = write_signed(b"<methodCall/>", b"sig", "https://a.example", 1700000000);
        assert_eq!(kind(&text), Kind::Signed);
        let m = parse_signed(&text, &limits()).unwrap();
        assert_eq!(m.payload, b"<methodCall/>");
        assert_eq!(m.signature, b"sig");
        assert_eq!(m.wwwroot, "https://a.example");
        assert_eq!(m.timestamp, 1700000000);
    }

    #[test]
    fn encrypted_round_trip() {
        let text = write_encrypted(b"data", b"key", "https://a.example");
        assert_eq!(kind(&text), Kind::Encrypted);
        let m = parse_encrypted(&text, &limits()).unwrap();
        assert_eq!(
            (m.data.as_slice(), m.wrapped_key.as_slice()),
            (&b"data"[..], &b"key"[..])
        );
        assert_eq!(m.wwwroot, "https://a.example");
    }

    #[test]
    fn repeated_or_missing_elements_are_refused() {
        let text = write_signed(b"x", b"sig", "https://a.example", 1);
        let doubled = text.replace(
            "<wwwroot>https://a.example</wwwroot>",
            "<wwwroot>https://a.example</wwwroot><wwwroot>https://b.example</wwwroot>",
        );
        assert!(matches!(
            parse_signed(&doubled, &limits()),
            Err(EnvelopeError::Repeated {
                name: "wwwroot",
                found: 2,
                ..
            })
        ));
        // A second SignatureValue hidden deeper still counts.
        let hidden = text.replace(
            "<KeyInfo>",
            "<KeyInfo><SignatureValue>AAAA</SignatureValue>",
        );
        assert!(parse_signed(&hidden, &limits()).is_err());
        let missing = text.replace("<timestamp>1</timestamp>", "");
        assert!(parse_signed(&missing, &limits()).is_err());

        let enc = write_encrypted(b"data", b"key", "https://a.example");
        let three = enc.replace(
            "<CarriedKeyName>",
            "<CipherData><CipherValue>AAAA</CipherValue></CipherData><CarriedKeyName>",
        );
        assert!(parse_encrypted(&three, &limits()).is_err());
    }

    #[test]
    fn truncated_base64_and_bad_timestamps_are_refused() {
        let text = write_signed(b"hello world", b"sig", "https://a.example", 1);
        let b = b64e(b"hello world");
        let cut = text.replace(&b, &b[..b.len() - 1]);
        assert_eq!(
            parse_signed(&cut, &limits()),
            Err(EnvelopeError::Base64("object"))
        );
        let neg = text.replace("<timestamp>1<", "<timestamp>-1<");
        assert_eq!(parse_signed(&neg, &limits()), Err(EnvelopeError::Timestamp));
    }

    #[test]
    fn key_before_data_is_refused() {
        let enc = "<encryptedMessage><EncryptedKey><CipherData><CipherValue>AAAA</CipherValue></CipherData></EncryptedKey><EncryptedData><CipherData><CipherValue>AAAA</CipherValue></CipherData></EncryptedData><wwwroot>x</wwwroot></encryptedMessage>";
        assert_eq!(parse_encrypted(enc, &limits()), Err(EnvelopeError::Order));
    }
}
