//! TLS for public listeners: rustls (TLS 1.2 and 1.3), several certificates chosen by SNI with
//! the first as default, ALPN h2 and http/1.1. Built from the config, so a reload re-reads the
//! certificate files.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;

use super::config::{CertificateConfig, TlsConfig};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{key}: {message}")]
    Certificate { key: String, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Picks a certificate by the SNI name: an exact name first, then a wildcard (`*.example.edu`),
/// then the first certificate of the list.
pub(crate) struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// "example.edu" for a "*.example.edu" certificate.
    wildcard: HashMap<String, usize>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("names", &self.exact.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = hello
            .server_name()
            .map(|n| n.to_ascii_lowercase())
            .and_then(|name| {
                self.exact.get(&name).copied().or_else(|| {
                    name.split_once('.')
                        .and_then(|(_, parent)| self.wildcard.get(parent).copied())
                })
            })
            .unwrap_or(0);
        self.certs.get(index).cloned()
    }
}

impl SniResolver {
    pub(crate) fn load(
        certs: &[CertificateConfig],
        listener: usize,
    ) -> Result<SniResolver, TlsError> {
        let provider = ring::default_provider();
        let mut resolver = SniResolver {
            certs: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, c) in certs.iter().enumerate() {
            let key = format!("server.listen[{listener}].tls.certificates[{i}]");
            let chain = read_chain(&c.cert_file).map_err(|message| TlsError::Certificate {
                key: format!("{key}.cert_file"),
                message,
            })?;
            let private = read_key(&c.key_file).map_err(|message| TlsError::Certificate {
                key: format!("{key}.key_file"),
                message,
            })?;
            let signing = provider
                .key_provider
                .load_private_key(private)
                .map_err(|e| TlsError::Certificate {
                    key: format!("{key}.key_file"),
                    message: format!("unusable private key: {e}"),
                })?;
            let names = certificate_names(&chain[0]).map_err(|message| TlsError::Certificate {
                key: format!("{key}.cert_file"),
                message,
            })?;
            let certified = CertifiedKey::new(chain, signing);
            certified.keys_match().map_err(|e| TlsError::Certificate {
                key: key.clone(),
                message: format!("the key does not belong to the certificate: {e}"),
            })?;
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => resolver.wildcard.entry(parent.to_string()).or_insert(i),
                    None => resolver.exact.entry(name).or_insert(i),
                };
            }
            resolver.certs.push(Arc::new(certified));
        }
        Ok(resolver)
    }
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{} holds no private key", path.display()))
}

/// The DNS names a certificate is for: its subjectAltNames, or its CN when it has none.
pub(crate) fn certificate_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_string());
            }
        }
    }
    Ok(names)
}

/// The rustls server config for one listener.
pub(crate) fn server_config(
    cfg: &TlsConfig,
    http2: bool,
    listener: usize,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let resolver = SniResolver::load(&cfg.certificates, listener)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
