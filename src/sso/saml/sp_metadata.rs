//! The SP metadata served at GET /auth/saml/metadata: entity ID, ACS (HTTP-POST), single
//! logout (HTTP-Redirect) and, when a key is set, the certificate for signing and encryption
//! and an enveloped XML signature over the whole document.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use samael::crypto::{Crypto, CryptoProvider};
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    EncryptionMethod, Endpoint, EntityDescriptor, IndexedEndpoint, KeyDescriptor, SpSsoDescriptor,
    HTTP_POST_BINDING, HTTP_REDIRECT_BINDING,
};
use samael::signature::{DigestAlgorithm, Signature};
use samael::traits::ToXml;

use super::sp_keys::SpKeys;

const METADATA_ID: &str = "moodle-edge-sp-metadata";

/// Where this SP is reached, as written into its metadata and checked in responses.
#[derive(Debug, Clone)]
pub(crate) struct SpEndpoints {
    pub entity_id: String,
    pub acs_url: String,
    pub slo_url: String,
}

/// The metadata document, signed when `keys` is given.
pub(crate) fn render(sp: &SpEndpoints, keys: Option<&SpKeys>) -> Result<String, String> {
    let key_info = keys.map(|k| KeyInfo {
        id: None,
        x509_data: Some(X509Data {
            certificates: vec![STANDARD.encode(k.cert.der_data())],
        }),
    });
    let key_descriptors = key_info
        .iter()
        .flat_map(|info| {
            [
                KeyDescriptor {
                    key_use: Some("signing".into()),
                    key_info: info.clone(),
                    encryption_methods: None,
                },
                KeyDescriptor {
                    key_use: Some("encryption".into()),
                    key_info: info.clone(),
                    encryption_methods: Some(
                        [
                            // What samael decrypts (see response_shape::ENCRYPTION).
                            "http://www.w3.org/2009/xmlenc11#aes128-gcm",
                            "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                            "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
                        ]
                        .into_iter()
                        .map(|a| EncryptionMethod {
                            algorithm: a.to_string(),
                        })
                        .collect(),
                    ),
                },
            ]
        })
        .collect();
    let descriptor = SpSsoDescriptor {
        protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".into()),
        key_descriptors: Some(key_descriptors),
        single_logout_services: Some(vec![Endpoint {
            binding: HTTP_REDIRECT_BINDING.into(),
            location: sp.slo_url.clone(),
            response_location: None,
        }]),
        authn_requests_signed: Some(keys.is_some()),
        want_assertions_signed: Some(true),
        assertion_consumer_services: vec![IndexedEndpoint {
            binding: HTTP_POST_BINDING.into(),
            location: sp.acs_url.clone(),
            index: 0,
            is_default: Some(true),
            ..IndexedEndpoint::default()
        }],
        ..SpSsoDescriptor::default()
    };
    let entity = EntityDescriptor {
        entity_id: Some(sp.entity_id.clone()),
        sp_sso_descriptors: Some(vec![descriptor]),
        ..EntityDescriptor::default()
    };
    let unsigned = entity.to_string().map_err(|e| e.to_string())?;
    let Some(keys) = keys else {
        return Ok(unsigned);
    };
    let mut template = Signature::template(METADATA_ID, &keys.cert);
    for reference in &mut template.signed_info.reference {
        reference.digest_method.algorithm = DigestAlgorithm::Sha256;
    }
    let signature = template.to_string().map_err(|e| e.to_string())?;
    let with_template = insert_signature_template(&unsigned, strip_declaration(&signature))?;
    let der = keys.key.private_key_to_der().map_err(|e| e.to_string())?;
    Crypto::sign_xml(with_template, &der).map_err(|e| e.to_string())
}

fn strip_declaration(xml: &str) -> &str {
    match xml.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, body)| body).unwrap_or(xml),
        None => xml,
    }
}

/// samael's serializer writes neither the ID attribute nor the Signature of an
/// EntityDescriptor, so both go into the text: the ID on the root, the template as its first
/// child (where the metadata schema puts ds:Signature).
fn insert_signature_template(xml: &str, signature: &str) -> Result<String, String> {
    const ROOT: &str = "<md:EntityDescriptor";
    let start = xml.find(ROOT).ok_or("no EntityDescriptor root")?;
    let end = start + xml[start..].find('>').ok_or("unterminated root")?;
    if xml[..end].ends_with('/') {
        return Err("the EntityDescriptor is empty".into());
    }
    Ok(format!(
        "{} ID=\"{METADATA_ID}\">{signature}{}",
        &xml[..end],
        &xml[end + 1..]
    ))
}
