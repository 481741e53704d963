//! The site's MNet key pairs: the current one (signs, and opens first) and the earlier ones
//! kept in `key_history_dir` (tried in turn when the current one does not open a message,
//! which then gets fault 7025). Also the forms keys come in: Moodle's stored
//! `CERTIFICATE_PEM@@@@@@@@PRIVATE_KEY_PEM`, and a certificate made the way Moodle's
//! mnet_generate_keypair() makes one.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use thiserror::Error;

/// Moodle's separator between certificate and key in its `mnet/openssl` config value.
pub(crate) const MOODLE_SEPARATOR: &str = "@@@@@@@@";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {detail}")]
    Bad { what: String, detail: String },
    #[error("{what}: the private key does not belong to the certificate")]
    Mismatch { what: String },
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

fn bad(what: &str, detail: impl std::fmt::Display) -> KeyError {
    KeyError::Bad {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// One certificate and its private key.
pub struct KeyPair {
    /// The PEM text as published (publickey.php, keyswap, the 7025 fault).
    pub cert_pem: String,
    /// Signs answers and opens messages sealed to this pair.
    pub key: PKey<Private>,
    /// Unix seconds after which Moodle peers treat the certificate as expired.
    pub not_after: i64,
    /// Unix seconds it was made (the key's age for metrics).
    pub not_before: i64,
    /// sha256 of the certificate's DER, hex: how logs and `mnet peers` name a key.
    pub fingerprint: String,
}

impl KeyPair {
    /// Builds a pair from PEM texts, checking that the key matches the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str, what: &str) -> Result<KeyPair, KeyError> {
        let cert = X509::from_pem(cert_pem.as_bytes()).map_err(|e| bad(what, e))?;
        let key = PKey::private_key_from_pem(key_pem.as_bytes()).map_err(|e| bad(what, e))?;
        let public = cert.public_key()?;
        if !public.public_eq(&key) {
            return Err(KeyError::Mismatch {
                what: what.to_string(),
            });
        }
        if key.rsa().is_err() {
            return Err(bad(what, "MNet keys are RSA keys"));
        }
        Ok(KeyPair {
            cert_pem: normalize_pem(cert_pem, "CERTIFICATE"),
            key,
            not_after: unix(cert.not_after())?,
            not_before: unix(cert.not_before())?,
            fingerprint: fingerprint(&cert)?,
        })
    }

    /// Moodle's stored form: certificate, `@@@@@@@@`, key (or the two PEM blocks in a row).
    pub fn from_moodle(text: &str, what: &str) -> Result<KeyPair, KeyError> {
        let (cert, key) = split_pair(text).ok_or_else(|| {
            bad(
                what,
                "expected a certificate and a private key (CERT@@@@@@@@KEY, as Moodle stores them)",
            )
        })?;
        KeyPair::from_pem(&cert, &key, what)
    }

    /// The private key as PEM (PKCS#8), for writing key files.
    pub fn key_pem(&self) -> Result<String, KeyError> {
        Ok(String::from_utf8_lossy(&self.key.private_key_to_pem_pkcs8()?).into_owned())
    }

    /// Moodle's stored form, for `php admin/cli/cfg.php --component=mnet --name=openssl`.
    pub fn to_moodle(&self) -> Result<String, KeyError> {
        Ok(format!(
            "{}{MOODLE_SEPARATOR}{}",
            self.cert_pem,
            self.key_pem()?
        ))
    }

    /// Days until `not_after` (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Splits a text holding one certificate and one private key, in either order, separated by
/// Moodle's `@@@@@@@@` or not at all.
fn split_pair(text: &str) -> Option<(String, String)> {
    let cert = pem_block(text, "CERTIFICATE")?;
    let key = ["PRIVATE KEY", "RSA PRIVATE KEY"]
        .iter()
        .find_map(|label| pem_block(text, label))?;
    Some((cert, key))
}

/// The first PEM block with this exact label.
fn pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(format!("{}\n", &text[start..stop]))
}

fn normalize_pem(text: &str, label: &str) -> String {
    pem_block(text, label).unwrap_or_else(|| text.to_string())
}

fn unix(t: &Asn1TimeRef) -> Result<i64, KeyError> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(t)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

fn fingerprint(cert: &X509) -> Result<String, KeyError> {
    Ok(hex::encode(cert.digest(MessageDigest::sha256())?))
}

/// A peer's certificate: the public key that checks its signatures and receives our seals.
pub struct PeerCert {
    pub cert_pem: String,
    pub key: PKey<Public>,
    pub not_after: i64,
    pub fingerprint: String,
}

impl PeerCert {
    pub fn from_pem(pem: &str, what: &str) -> Result<PeerCert, KeyError> {
        let cert = X509::from_pem(pem.as_bytes()).map_err(|e| bad(what, e))?;
        let key = cert.public_key()?;
        if key.rsa().is_err() {
            return Err(bad(what, "MNet keys are RSA keys"));
        }
        Ok(PeerCert {
            cert_pem: normalize_pem(pem, "CERTIFICATE"),
            key,
            not_after: unix(cert.not_after())?,
            fingerprint: fingerprint(&cert)?,
        })
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<KeyPair, KeyError> {
    KeyPair::from_pem(
        &read(cert_file)?,
        &read(key_file)?,
        &cert_file.display().to_string(),
    )
}

pub fn load_peer_cert(path: &Path) -> Result<PeerCert, KeyError> {
    PeerCert::from_pem(&read(path)?, &path.display().to_string())
}

/// Every pair in the history folder (each file one certificate and key, in either form),
/// newest certificate first. Files that are not pairs are an error, so a typo is not a key
/// silently dropped from the history.
pub fn load_history(dir: &Path) -> Result<Vec<KeyPair>, KeyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| KeyError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut pairs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| KeyError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if !path.is_file()
            || path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        pairs.push(KeyPair::from_moodle(
            &read(&path)?,
            &path.display().to_string(),
        )?);
    }
    pairs.sort_by_key(|p| std::cmp::Reverse(p.not_after));
    Ok(pairs)
}

/// What goes into a new certificate's subject, as Moodle fills it.
pub struct Subject<'a> {
    pub wwwroot: &'a str,
    pub organization: &'a str,
    pub country: &'a str,
    pub locality: &'a str,
    pub email: &'a str,
}

/// A new RSA-2048 key and a self-signed certificate shaped like mnet_generate_keypair()'s:
/// C, ST, L, O, OU = Moodle, CN = the first 64 characters of wwwroot (no trailing slash), the
/// whole wwwroot as a `subjectAltName` subject attribute, emailAddress; `days` of lifetime.
pub fn generate(subject: &Subject<'_>, days: u32) -> Result<KeyPair, KeyError> {
    let rsa = Rsa::generate(2048)?;
    let key = PKey::from_rsa(rsa)?;
    let mut name = X509NameBuilder::new()?;
    let cn: String = subject.wwwroot.chars().take(64).collect();
    let cn = cn.trim_end_matches('/');
    let country: String = subject.country.chars().take(2).collect();
    name.append_entry_by_text("C", &country)?;
    name.append_entry_by_text("ST", subject.locality)?;
    name.append_entry_by_text("L", subject.locality)?;
    name.append_entry_by_text("O", subject.organization)?;
    name.append_entry_by_text("OU", "Moodle")?;
    name.append_entry_by_text("CN", cn)?;
    name.append_entry_by_text("subjectAltName", subject.wwwroot)?;
    name.append_entry_by_text("emailAddress", subject.email)?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(days)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.sign(&key, MessageDigest::sha256())?;
    let cert = builder.build();
    let cert_pem = String::from_utf8_lossy(&cert.to_pem()?).into_owned();
    let key_pem = String::from_utf8_lossy(&key.private_key_to_pem_pkcs8()?).into_owned();
    KeyPair::from_pem(&cert_pem, &key_pem, "generated key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject<'static> {
        Subject {
            wwwroot: "https://lms.example.edu",
            organization: "Example LMS",
            country: "NZ",
            locality: "Wellington",
            email: "noreply@lms.example.edu",
        }
    }

    #[test]
    fn generate_and_moodle_form_round_trip() {
        let pair = generate(&subject(), 28).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((27..=28).contains(&pair.days_left(now)));
        let moodle = pair.to_moodle().unwrap();
        assert!(moodle.contains("-----END CERTIFICATE-----\n@@@@@@@@-----BEGIN PRIVATE KEY-----"));
        let back = KeyPair::from_moodle(&moodle, "t").unwrap();
        assert_eq!(back.fingerprint, pair.fingerprint);
        let cert = X509::from_pem(pair.cert_pem.as_bytes()).unwrap();
        let cn = cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .as_slice()
            .to_vec();
        let cn = String::from_utf8(cn).unwrap();
        assert_eq!(cn, "https://lms.example.edu");
    }

    #[test]
    fn mismatched_and_garbage_pairs_are_refused() {
        let a = generate(&subject(), 1).unwrap();
        let b = generate(&subject(), 1).unwrap();
        let mixed = format!("{}{MOODLE_SEPARATOR}{}", a.cert_pem, b.key_pem().unwrap());
        assert!(matches!(
            KeyPair::from_moodle(&mixed, "t"),
            Err(KeyError::Mismatch { .. })
        ));
        assert!(KeyPair::from_moodle("nonsense", "t").is_err());
        assert!(PeerCert::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "t"
        )
        .is_err());
    }
}
