//! One SAML provider, built from its config: the SP's endpoints and keys, the IdP as the
//! metadata last described it (swapped whole by a refresh, which a background task runs every
//! `saml.idp_metadata_refresh`), and the samael service provider made from both for each check.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use samael::crypto::CertificateDer;
use samael::service_provider::ServiceProvider;

use super::config::SamlOptions;
use super::idp_metadata::{self, Idp};
use super::metadata_source::MetadataSource;
use super::signature_policy;
use super::sp_keys::{self, SpKeys};
use super::sp_metadata::{self, SpEndpoints};
use crate::sso::config::ProviderConfig;

/// A build error: the key path and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SamlBuildError {
    pub key: String,
    pub message: String,
}

pub(crate) struct SamlProvider {
    /// The provider's `id`: in URLs, logs and metrics.
    pub id: String,
    /// Entity ID, ACS and SLO URLs, as the IdP knows them.
    pub sp: SpEndpoints,
    /// Signs requests and metadata, decrypts assertions.
    pub keys: Option<SpKeys>,
    /// The attribute (or `NameID`) that fills the hand-off's mapping field.
    pub user_attribute: String,
    pub opts: SamlOptions,
    source: MetadataSource,
    /// The configured metadata signing certificate (DER), when metadata must be signed.
    metadata_signer: Option<CertificateDer>,
    /// None only while URL metadata has not been fetched yet.
    idp: ArcSwapOption<Idp>,
    /// The SP metadata document, rendered (and signed) once.
    pub sp_metadata: String,
}

impl std::fmt::Debug for SamlProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlProvider")
            .field("id", &self.id)
            .finish()
    }
}

impl SamlProvider {
    /// Builds the provider; `key` is its config path (`sso.providers[i]`), `wwwroot` the
    /// site's public URL that the SP endpoints hang off.
    pub(crate) fn build(
        key: &str,
        p: &ProviderConfig,
        wwwroot: &str,
    ) -> Result<Arc<SamlProvider>, SamlBuildError> {
        let fail = |name: &str, message: String| SamlBuildError {
            key: format!("{key}.{name}"),
            message,
        };
        let opts = p.saml.clone().unwrap_or_default();
        let base = wwwroot.trim_end_matches('/');
        let sp = SpEndpoints {
            entity_id: p
                .sp_entity_id
                .clone()
                .unwrap_or_else(|| format!("{base}/auth/saml/metadata")),
            acs_url: format!("{base}/auth/saml/acs"),
            slo_url: format!("{base}/auth/saml/slo"),
        };
        let keys = match (&p.sp_cert_file, &p.sp_key_file) {
            (Some(cert), Some(key_file)) => {
                Some(sp_keys::load(cert, key_file).map_err(|(name, message)| fail(name, message))?)
            }
            _ => None,
        };
        let metadata_signer = opts
            .idp_metadata_signing_cert_file
            .as_ref()
            .map(|path| {
                let name = "saml.idp_metadata_signing_cert_file";
                let pem = std::fs::read(path)
                    .map_err(|e| fail(name, format!("cannot read {}: {e}", path.display())))?;
                openssl::x509::X509::from_pem(&pem)
                    .and_then(|c| c.to_der())
                    .map(CertificateDer::from)
                    .map_err(|_| fail(name, format!("{} is not a PEM certificate", path.display())))
            })
            .transpose()?;
        let (source, source_key) = match (&p.idp_metadata_file, &opts.idp_metadata_url) {
            (Some(file), _) => (MetadataSource::File(file.clone()), "idp_metadata_file"),
            (None, Some(url)) => (MetadataSource::Url(url.clone()), "saml.idp_metadata_url"),
            (None, None) => {
                return Err(fail("idp_metadata_file", "is required".into()));
            }
        };
        // A file is read now, so a bad one stops the start (or the reload) with its key.
        let idp = match &source {
            MetadataSource::File(path) => {
                let xml = std::fs::read_to_string(path).map_err(|e| {
                    fail(source_key, format!("cannot read {}: {e}", path.display()))
                })?;
                let idp = idp_metadata::parse(
                    &xml,
                    metadata_signer.as_ref(),
                    opts.idp_entity_id.as_deref(),
                )
                .map_err(|e| fail(source_key, e.to_string()))?;
                Some(idp)
            }
            MetadataSource::Url(_) => None,
        };
        let sp_metadata = sp_metadata::render(&sp, keys.as_ref())
            .map_err(|e| fail("sp_key_file", format!("cannot sign the SP metadata: {e}")))?;
        let fetch_now = idp.is_none();
        let provider = Arc::new(SamlProvider {
            id: p.id.clone(),
            sp,
            keys,
            user_attribute: p.user_attribute.clone().unwrap_or_default(),
            source,
            metadata_signer,
            idp: ArcSwapOption::new(idp),
            sp_metadata,
            opts,
        });
        spawn_refresh(
            &provider,
            provider.opts.idp_metadata_refresh.get(),
            fetch_now,
        );
        Ok(provider)
    }

    /// The IdP as last read; None while URL metadata has not arrived yet.
    pub(crate) fn idp(&self) -> Option<Arc<Idp>> {
        self.idp.load_full()
    }

    /// Reads the metadata again; keeps the old one when the new reading fails.
    pub(crate) async fn refresh_metadata(&self) {
        let result = match self.source.read().await {
            Ok(xml) => idp_metadata::parse(
                &xml,
                self.metadata_signer.as_ref(),
                self.opts.idp_entity_id.as_deref(),
            )
            .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(idp) => {
                tracing::debug!(provider = %self.id, entity = %idp.entity_id, "saml: IdP metadata read");
                self.idp.store(Some(idp));
            }
            Err(e) => tracing::warn!(
                provider = %self.id,
                error = %e,
                "saml: IdP metadata not updated (the last good one stays)"
            ),
        }
    }

    /// The samael SP that checks one response from `idp`. `unsolicited` lifts the
    /// InResponseTo check: only for a response that names no request, on a provider that
    /// allows IdP-initiated login.
    pub(crate) fn service_provider(&self, idp: &Idp, unsolicited: bool) -> ServiceProvider {
        let chrono = |d: std::time::Duration| {
            chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(60))
        };
        ServiceProvider {
            entity_id: Some(self.sp.entity_id.clone()),
            key: self.keys.as_ref().map(|k| k.key.clone()),
            certificate: self.keys.as_ref().map(|k| k.cert.clone()),
            metadata_url: Some(self.sp.entity_id.clone()),
            acs_url: Some(self.sp.acs_url.clone()),
            slo_url: Some(self.sp.slo_url.clone()),
            idp_metadata: idp.descriptor.clone(),
            allow_idp_initiated: unsolicited,
            max_issue_delay: chrono(self.opts.max_response_age.get()),
            max_clock_skew: chrono(self.opts.max_clock_skew.get()),
            allowed_signature_algorithms: signature_policy::allowed(self.opts.allow_sha1),
            ..ServiceProvider::default()
        }
    }
}

/// Reads the metadata again every `every` while the provider lives (a reload that drops the
/// provider ends the task). The first reading is at once when `now` is set (URL sources).
fn spawn_refresh(provider: &Arc<SamlProvider>, every: Duration, now: bool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // `moodle-edge check`: nothing runs, nothing to refresh
    };
    let weak: Weak<SamlProvider> = Arc::downgrade(provider);
    runtime.spawn(async move {
        let mut first = now;
        loop {
            if !first {
                tokio::time::sleep(every).await;
            }
            first = false;
            let Some(provider) = weak.upgrade() else {
                return;
            };
            provider.refresh_metadata().await;
        }
    });
}
