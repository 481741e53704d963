//! Unit tests over the SAML pieces that need keys: IdP metadata (signing certificates, the
//! metadata signature) and the SP metadata. The protocol flows are tested end to end against a
//! real SimpleSAMLphp in tests/sso_saml.rs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};
use samael::signature::{DigestAlgorithm, Signature};

use super::idp_metadata::{self, MetadataError};
use super::signature_policy;
use super::sp_keys::SpKeys;
use super::sp_metadata::{self, SpEndpoints};

fn keypair(cn: &str) -> (PKey<Private>, X509) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (key, b.build())
}

fn idp_metadata_xml(cert: Option<&X509>, id: &str) -> String {
    let key = cert
        .map(|c| {
            format!(
                "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}\
                 </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
                STANDARD.encode(c.to_der().unwrap())
            )
        })
        .unwrap_or_default();
    format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"https://idp.test/md\" ID=\"{id}\">\
         <md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{key}\
         <md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
         Location=\"https://idp.test/slo\"/>\
         <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
         Location=\"https://idp.test/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>"
    )
}

/// Signs metadata the way a federation does: an enveloped signature over the root.
fn sign_metadata(xml: &str, key: &PKey<Private>, cert: &X509, id: &str) -> String {
    let mut template = Signature::template(id, &CertificateDer::from(cert.to_der().unwrap()));
    for r in &mut template.signed_info.reference {
        r.digest_method.algorithm = DigestAlgorithm::Sha256;
    }
    let sig = samael::traits::ToXml::to_string(&template).unwrap();
    let sig = sig.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let with_template = xml.replacen(
        "<md:IDPSSODescriptor",
        &format!("{sig}<md:IDPSSODescriptor"),
        1,
    );
    Crypto::sign_xml(with_template, &key.private_key_to_der().unwrap()).unwrap()
}

#[test]
fn idp_metadata_gives_keys_and_endpoints() {
    let (_, cert) = keypair("idp");
    let idp = idp_metadata::parse(&idp_metadata_xml(Some(&cert), "_m"), None, None).unwrap();
    assert_eq!(idp.entity_id, "https://idp.test/md");
    assert_eq!(idp.sso_redirect, "https://idp.test/sso");
    assert_eq!(
        idp.slo_redirect.as_ref().unwrap().location,
        "https://idp.test/slo"
    );
    assert_eq!(idp.signing_keys.len(), 1);
}

#[test]
fn idp_metadata_without_signing_cert_is_refused() {
    let err = idp_metadata::parse(&idp_metadata_xml(None, "_m"), None, None).unwrap_err();
    assert!(matches!(err, MetadataError::NoSigningCert(_)), "{err}");
    assert!(err.to_string().contains("signing certificate"));
}

#[test]
fn idp_metadata_signature_is_checked_when_configured() {
    let (idp_key, idp_cert) = keypair("idp");
    let (fed_key, fed_cert) = keypair("federation");
    let (other_key, other_cert) = keypair("other");
    let xml = idp_metadata_xml(Some(&idp_cert), "_m");
    let signed = sign_metadata(&xml, &fed_key, &fed_cert, "_m");
    let fed = CertificateDer::from(fed_cert.to_der().unwrap());
    assert!(idp_metadata::parse(&signed, Some(&fed), None).is_ok());
    // Unsigned, signed by someone else, or changed after signing: refused.
    assert!(matches!(
        idp_metadata::parse(&xml, Some(&fed), None),
        Err(MetadataError::Signature)
    ));
    let by_other = sign_metadata(&xml, &other_key, &other_cert, "_m");
    assert!(matches!(
        idp_metadata::parse(&by_other, Some(&fed), None),
        Err(MetadataError::Signature)
    ));
    let tampered = signed.replace("https://idp.test/sso", "https://evil.test/sso");
    assert!(matches!(
        idp_metadata::parse(&tampered, Some(&fed), None),
        Err(MetadataError::Signature)
    ));
    let _ = idp_key;
}

#[test]
fn sp_metadata_is_signed_and_verifies() {
    let (key, cert) = keypair("sp");
    let keys = SpKeys {
        cert: CertificateDer::from(cert.to_der().unwrap()),
        key,
    };
    let sp = SpEndpoints {
        entity_id: "https://lms.test/auth/saml/metadata".into(),
        acs_url: "https://lms.test/auth/saml/acs".into(),
        slo_url: "https://lms.test/auth/saml/slo".into(),
    };
    let signed = sp_metadata::render(&sp, Some(&keys)).unwrap();
    let verified = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        &signed,
        std::slice::from_ref(&keys.cert),
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(signature_policy::SHA2),
    )
    .unwrap();
    assert!(verified.contains("https://lms.test/auth/saml/acs"));
    assert!(verified.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"));
    let plain = sp_metadata::render(&sp, None).unwrap();
    assert!(!plain.contains("Signature"));
    assert!(plain.contains("entityID=\"https://lms.test/auth/saml/metadata\""));
}
