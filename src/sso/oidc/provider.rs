//! One OpenID provider at run time: its settings, its discovered metadata and its keys.
//!
//! Discovery happens on first use (a provider that is down at start-up does not stop the
//! proxy) and is cached. The JWKS comes with discovery and is fetched again when a token names
//! a key id it does not hold (key rotation), at most once per `JWKS_REFETCH_EVERY`, so tokens
//! with made-up key ids cannot make the edge hammer the provider. The crate caches neither.

use std::time::{Duration, Instant};

use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{ClientId, IssuerUrl, JsonWebKeySet, ProviderMetadataWithLogout};
use thiserror::Error;
use tokio::sync::{Mutex, RwLock};

use super::http_adapter::CrateHttp;
use crate::sso::client_auth::ClientCredentials;
use crate::sso::config::ProviderConfig;
use crate::sso::outbound::HttpClient;

/// The shortest time between two JWKS fetches caused by unknown key ids.
pub(crate) const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum OidcConfigError {
    #[error("sso.providers[{index}].{key}: {message}")]
    Key {
        index: usize,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Error)]
pub(crate) enum DiscoveryFailed {
    #[error("discovery of {issuer}: {message}")]
    Discovery { issuer: String, message: String },
}

pub(crate) struct OidcProvider {
    /// The config as written (claims, scopes, rules ...).
    pub cfg: ProviderConfig,
    pub issuer: IssuerUrl,
    pub client_id: ClientId,
    /// The secret or the private key, read at build time; never logged.
    pub credentials: ClientCredentials,
    /// The allow-list, parsed; `none` is refused at build time.
    pub algs: Vec<CoreJwsSigningAlgorithm>,
    pub skew: Duration,
    /// Discovered metadata with its JWKS; None until first use.
    metadata: RwLock<Option<ProviderMetadataWithLogout>>,
    /// When the JWKS was last fetched because of an unknown key id.
    last_refetch: Mutex<Option<Instant>>,
}

impl OidcProvider {
    pub(crate) fn build(
        index: usize,
        cfg: &ProviderConfig,
    ) -> Result<OidcProvider, OidcConfigError> {
        let err = |key: &'static str, message: String| OidcConfigError::Key {
            index,
            key,
            message,
        };
        let issuer_text = cfg.issuer.clone().unwrap_or_default();
        let issuer = IssuerUrl::new(issuer_text.clone())
            .map_err(|e| err("issuer", format!("{issuer_text:?} is not a URL: {e}")))?;
        let credentials = ClientCredentials::load(cfg).map_err(|(key, m)| err(key, m))?;
        let mut algs = Vec::new();
        for a in &cfg.id_token_algs {
            let alg = parse_alg(a).ok_or_else(|| {
                err(
                    "id_token_algs",
                    format!("{a:?} is not an accepted JWS algorithm"),
                )
            })?;
            algs.push(alg);
        }
        if algs.is_empty() {
            return Err(err(
                "id_token_algs",
                "must name at least one algorithm".into(),
            ));
        }
        Ok(OidcProvider {
            cfg: cfg.clone(),
            issuer,
            client_id: ClientId::new(cfg.client_id.clone().unwrap_or_default()),
            credentials,
            algs,
            skew: cfg.clock_skew.get(),
            metadata: RwLock::new(None),
            last_refetch: Mutex::new(None),
        })
    }

    /// The discovered metadata (discovering it on first use).
    pub(crate) async fn metadata(
        &self,
        http: &HttpClient,
    ) -> Result<ProviderMetadataWithLogout, DiscoveryFailed> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        let mut slot = self.metadata.write().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &CrateHttp(http))
            .await
            .map_err(|e| DiscoveryFailed::Discovery {
                issuer: self.issuer.to_string(),
                message: e.to_string(),
            })?;
        *slot = Some(m.clone());
        Ok(m)
    }

    /// Fetches the JWKS again after a token named an unknown key; false when the last such
    /// fetch was too recent (or failed), so the caller refuses the token as it is.
    pub(crate) async fn refetch_jwks(&self, http: &HttpClient) -> bool {
        {
            let mut last = self.last_refetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let Ok(meta) = self.metadata(http).await else {
            return false;
        };
        let jwks: CoreJsonWebKeySet = match JsonWebKeySet::fetch_async(
            meta.jwks_uri(),
            &CrateHttp(http),
        )
        .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(issuer = %self.issuer.as_str(), error = %e, "sso: JWKS fetch failed");
                return false;
            }
        };
        let mut slot = self.metadata.write().await;
        if let Some(m) = slot.take() {
            *slot = Some(m.set_jwks(jwks));
        }
        true
    }

    /// The current JWKS (after discovery).
    pub(crate) async fn jwks(
        &self,
        http: &HttpClient,
    ) -> Result<CoreJsonWebKeySet, DiscoveryFailed> {
        Ok(self.metadata(http).await?.jwks().clone())
    }
}

/// A JWS algorithm name as the allow-list accepts it: asymmetric ones only. `none` is never
/// accepted, and HS* are not either: the edge verifies with the provider's public keys, so an
/// HMAC "signed" with a public key (the classic confusion) has nothing to verify against.
pub(crate) fn parse_alg(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    Some(match name {
        "RS256" => A::RsaSsaPkcs1V15Sha256,
        "RS384" => A::RsaSsaPkcs1V15Sha384,
        "RS512" => A::RsaSsaPkcs1V15Sha512,
        "ES256" => A::EcdsaP256Sha256,
        "ES384" => A::EcdsaP384Sha384,
        "ES512" => A::EcdsaP521Sha512,
        "PS256" => A::RsaSsaPssSha256,
        "PS384" => A::RsaSsaPssSha384,
        "PS512" => A::RsaSsaPssSha512,
        "EdDSA" => A::EdDsa,
        _ => return None,
    })
}
