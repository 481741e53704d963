//! The HTTP-Redirect binding (SAML bindings 3.4): a message is deflated, base64-encoded and
//! put in the query as `SAMLRequest` or `SAMLResponse`, with an optional `RelayState`; a signed
//! one adds `SigAlg` and `Signature` over the URL-encoded octets of those parameters, in that
//! order.
//!
//! Written here rather than through samael's URL verifier: that one re-encodes the parameters
//! before checking (the spec says to use the octets as received, and IdPs encode differently),
//! and it panics on a missing `SigAlg`, an unknown algorithm or a URL without a host.

use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use thiserror::Error;

pub(crate) const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const RSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384";
const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";

/// A deflated message larger than this inflates to a refusal, not to memory.
const MAX_INFLATED: u64 = 256 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum BindingError {
    #[error("the {0} parameter is missing")]
    Missing(&'static str),
    #[error("the {0} parameter appears more than once")]
    Repeated(&'static str),
    #[error("the message is not valid base64")]
    Base64,
    #[error("the message does not inflate (or inflates past {MAX_INFLATED} bytes)")]
    Inflate,
    #[error("the message is not UTF-8")]
    Utf8,
    #[error("the signature algorithm {0:?} is not allowed")]
    Algorithm(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Which message parameter a query carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

impl Kind {
    fn param(self) -> &'static str {
        match self {
            Kind::Request => "SAMLRequest",
            Kind::Response => "SAMLResponse",
        }
    }
}

/// A message read from a query string, with what is needed to check its signature.
#[derive(Debug)]
pub(crate) struct Received {
    /// The inflated XML.
    pub xml: String,
    pub relay_state: Option<String>,
    /// The signature, when the sender signed the URL.
    signature: Option<QuerySignature>,
}

#[derive(Debug)]
struct QuerySignature {
    /// The raw `Name=value&...` octets that were signed, rebuilt in the spec's order.
    signed: String,
    algorithm: String,
    value: Vec<u8>,
}

impl Received {
    pub(crate) fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// Checks the URL signature against any of `keys`, allowing SHA-1 only when asked.
    pub(crate) fn verify(
        &self,
        keys: &[PKey<Public>],
        allow_sha1: bool,
    ) -> Result<(), BindingError> {
        let sig = self
            .signature
            .as_ref()
            .ok_or(BindingError::Missing("Signature"))?;
        let digest = digest_for(&sig.algorithm, allow_sha1)?;
        for key in keys {
            let ok = Verifier::new(digest, key)
                .and_then(|mut v| {
                    v.update(sig.signed.as_bytes())?;
                    v.verify(&sig.value)
                })
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
        }
        Err(BindingError::BadSignature)
    }
}

fn digest_for(algorithm: &str, allow_sha1: bool) -> Result<MessageDigest, BindingError> {
    match algorithm {
        RSA_SHA256 | ECDSA_SHA256 => Ok(MessageDigest::sha256()),
        RSA_SHA384 => Ok(MessageDigest::sha384()),
        RSA_SHA512 => Ok(MessageDigest::sha512()),
        RSA_SHA1 if allow_sha1 => Ok(MessageDigest::sha1()),
        other => Err(BindingError::Algorithm(other.to_string())),
    }
}

/// Reads a redirect-binding message of `kind` from a raw (still percent-encoded) query.
pub(crate) fn receive(query: &str, kind: Kind) -> Result<Received, BindingError> {
    let mut message = None;
    let mut relay = None;
    let mut sig_alg = None;
    let mut signature = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            n if n == kind.param() => (&mut message, kind.param()),
            "RelayState" => (&mut relay, "RelayState"),
            "SigAlg" => (&mut sig_alg, "SigAlg"),
            "Signature" => (&mut signature, "Signature"),
            _ => continue,
        };
        if slot.0.replace(pair).is_some() {
            return Err(BindingError::Repeated(slot.1));
        }
    }
    let message = message.ok_or(BindingError::Missing(kind.param()))?;
    let xml = inflate(&decode_value(message))?;
    let relay_state = relay.map(decode_value).filter(|r| !r.is_empty());
    let signature = match (sig_alg, signature) {
        (None, None) => None,
        (Some(alg), Some(sig)) => {
            let signed = [Some(message), relay, Some(alg)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("&");
            Some(QuerySignature {
                signed,
                algorithm: decode_value(alg),
                value: STANDARD
                    .decode(decode_value(sig).as_bytes())
                    .map_err(|_| BindingError::Base64)?,
            })
        }
        (None, Some(_)) => return Err(BindingError::Missing("SigAlg")),
        (Some(_), None) => return Err(BindingError::Missing("Signature")),
    };
    Ok(Received {
        xml,
        relay_state,
        signature,
    })
}

/// The value part of `Name=value`, percent-decoded (`+` is a space, as forms encode it).
fn decode_value(pair: &str) -> String {
    let value = pair.split_once('=').map(|(_, v)| v).unwrap_or("");
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn inflate(b64: &str) -> Result<String, BindingError> {
    // Some senders wrap base64 in lines; whitespace is never part of it.
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let deflated = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| BindingError::Base64)?;
    let mut out = Vec::new();
    DeflateDecoder::new(&deflated[..])
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|_| BindingError::Inflate)?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(BindingError::Inflate);
    }
    String::from_utf8(out).map_err(|_| BindingError::Utf8)
}

/// Builds the query for sending `xml` as `kind`, signed with `key` (RSA-SHA256) when given.
pub(crate) fn send_query(
    xml: &str,
    kind: Kind,
    relay_state: Option<&str>,
    key: Option<&PKey<Private>>,
) -> Result<String, BindingError> {
    let mut deflated = Vec::new();
    {
        let mut enc = DeflateEncoder::new(&mut deflated, Compression::default());
        enc.write_all(xml.as_bytes())
            .and_then(|_| enc.try_finish())
            .map_err(|e| BindingError::Sign(e.to_string()))?;
    }
    let mut query = format!("{}={}", kind.param(), encode(&STANDARD.encode(&deflated)));
    if let Some(relay) = relay_state {
        query.push_str("&RelayState=");
        query.push_str(&encode(relay));
    }
    if let Some(key) = key {
        query.push_str("&SigAlg=");
        query.push_str(&encode(RSA_SHA256));
        let signature = Signer::new(MessageDigest::sha256(), key)
            .and_then(|mut s| {
                s.update(query.as_bytes())?;
                s.sign_to_vec()
            })
            .map_err(|e| BindingError::Sign(e.to_string()))?;
        query.push_str("&Signature=");
        query.push_str(&encode(&STANDARD.encode(signature)));
    }
    Ok(query)
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    fn keypair() -> (PKey<Private>, PKey<Public>) {
        let rsa = Rsa::generate(2048).unwrap();
        let private = PKey::from_rsa(rsa.clone()).unwrap();
        let public = PKey::public_key_from_pem(&private.public_key_to_pem().unwrap()).unwrap();
        (private, public)
    }

    #[test]
    fn round_trip_signed() {
        let (private, public) = keypair();
        let q = send_query(
            "<samlp:LogoutRequest/>",
            Kind::Request,
            Some("r s&x"),
            Some(&private),
        )
        .unwrap();
        let got = receive(&q, Kind::Request).unwrap();
        assert_eq!(got.xml, "<samlp:LogoutRequest/>");
        assert_eq!(got.relay_state.as_deref(), Some("r s&x"));
        assert!(got.verify(std::slice::from_ref(&public), false).is_ok());
        // A changed RelayState breaks the signature.
        let tampered = q.replace("RelayState=r", "RelayState=q");
        let got = receive(&tampered, Kind::Request).unwrap();
        assert_eq!(
            got.verify(&[public], false),
            Err(BindingError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_and_sha1_refused() {
        let (private, _) = keypair();
        let (_, other) = keypair();
        let q = send_query("<x/>", Kind::Response, None, Some(&private)).unwrap();
        let got = receive(&q, Kind::Response).unwrap();
        assert_eq!(got.verify(&[other], false), Err(BindingError::BadSignature));
        assert!(matches!(
            digest_for(RSA_SHA1, false),
            Err(BindingError::Algorithm(_))
        ));
        assert!(digest_for(RSA_SHA1, true).is_ok());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            receive("RelayState=x", Kind::Request).unwrap_err(),
            BindingError::Missing("SAMLRequest")
        );
        assert_eq!(
            receive("SAMLRequest=%%%", Kind::Request).unwrap_err(),
            BindingError::Base64
        );
        assert_eq!(
            receive("SAMLRequest=aGVsbG8=", Kind::Request).unwrap_err(),
            BindingError::Inflate
        );
        assert_eq!(
            receive("SAMLRequest=a&SAMLRequest=b", Kind::Request).unwrap_err(),
            BindingError::Repeated("SAMLRequest")
        );
        let q = send_query("<x/>", Kind::Request, None, None).unwrap();
        assert_eq!(
            receive(&format!("{q}&Signature=AAAA"), Kind::Request).unwrap_err(),
            BindingError::Missing("SigAlg")
        );
        let unsigned = receive(&q, Kind::Request).unwrap();
        assert!(!unsigned.is_signed());
    }

    #[test]
    fn inflation_is_bounded() {
        let big = "<a>".to_string() + &"x".repeat(1024 * 1024) + "</a>";
        let q = send_query(&big, Kind::Request, None, None).unwrap();
        assert_eq!(
            receive(&q, Kind::Request).unwrap_err(),
            BindingError::Inflate
        );
    }
}
