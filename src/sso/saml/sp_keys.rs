//! The SP's own certificate and key (`sp_cert_file`, `sp_key_file`, PEM): the key signs
//! AuthnRequests, logout messages and the SP metadata, and decrypts encrypted assertions; the
//! certificate goes into the SP metadata so the IdP can check and encrypt.

use std::path::Path;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use samael::crypto::CertificateDer;

/// The loaded pair. Its Debug output never shows the key.
#[derive(Clone)]
pub(crate) struct SpKeys {
    pub cert: CertificateDer,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for SpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpKeys { .. }")
    }
}

/// Loads both files; an error is `(key path suffix, what is wrong)`.
pub(crate) fn load(cert_file: &Path, key_file: &Path) -> Result<SpKeys, (&'static str, String)> {
    let cert_pem = std::fs::read(cert_file).map_err(|e| {
        (
            "sp_cert_file",
            format!("cannot read {}: {e}", cert_file.display()),
        )
    })?;
    let cert = X509::from_pem(&cert_pem)
        .and_then(|c| c.to_der())
        .map_err(|_| {
            (
                "sp_cert_file",
                format!("{} is not a PEM certificate", cert_file.display()),
            )
        })?;
    let key_pem = std::fs::read(key_file).map_err(|e| {
        (
            "sp_key_file",
            format!("cannot read {}: {e}", key_file.display()),
        )
    })?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|_| {
        (
            "sp_key_file",
            format!("{} is not a PEM private key", key_file.display()),
        )
    })?;
    let matches = X509::from_der(&cert)
        .and_then(|c| c.public_key())
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(("sp_key_file", "does not belong to sp_cert_file".to_string()));
    }
    if key.rsa().is_err() {
        return Err((
            "sp_key_file",
            "must be an RSA key (what SAML IdPs expect)".to_string(),
        ));
    }
    Ok(SpKeys {
        cert: CertificateDer::from(cert),
        key,
    })
}
