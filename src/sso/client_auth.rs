//! How the edge authenticates itself at a token endpoint (OIDC and plain OAuth 2 alike):
//! a client secret (`client_secret_basic` / `client_secret_post`), or `private_key_jwt`
//! (RFC 7523, OIDC Core 9): a short-lived JWT signed with the client's own key, so no shared
//! secret exists at all.
//!
//! Order: `ClientCredentials::load` reads the secret or the key file at build time (errors name
//! the key) -> per token request, `secret` and `auth_type` configure the crate's client and
//! `assertion` mints a fresh JWT (new `jti`, 60 s life) sent as `client_assertion`.
//!
//! The JWT is signed with `ring` (already the TLS stack's crypto): constant-time RSA and ECDSA
//! from PKCS#8 keys, which the `openidconnect` crate's own signing key (PKCS#1 RSA only, on the
//! `rsa` crate with its timing advisory) does not offer.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::{AuthType, ClientSecret};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use rustls::pki_types::PrivateKeyDer;

use super::config::{ClientAuth, ProviderConfig};

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 section 2.2).
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a client assertion is valid: one token request.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// A signing key and the JWS algorithm it implies.
pub(crate) enum SigningKey {
    /// RS256.
    Rsa(RsaKeyPair),
    /// ES256 (P-256).
    EcP256(EcdsaKeyPair),
}

/// The client's credentials for the token endpoint.
pub(crate) enum ClientCredentials {
    /// A shared secret, sent as HTTP Basic or in the body.
    Secret {
        /// Read from `client_secret_file`; never logged.
        secret: ClientSecret,
        /// Basic or body, as `client_auth` says.
        auth: AuthType,
    },
    /// `private_key_jwt`: the key from `client_key_file`, its `kid` if configured.
    KeyJwt {
        /// The private key (boxed: a key pair is much larger than a secret); never logged.
        key: Box<SigningKey>,
        /// `client_key_id`: lets the provider pick the key among the client's registered ones.
        kid: Option<String>,
    },
}

/// A config problem: the key path's last part and what is wrong.
pub(crate) type LoadError = (&'static str, String);

fn read_secret(path: Option<&Path>) -> Result<ClientSecret, LoadError> {
    let Some(path) = path else {
        return Err(("client_secret_file", "is required".into()));
    };
    let secret = std::fs::read_to_string(path)
        .map_err(|e| ("client_secret_file", format!("{}: {e}", path.display())))?
        .trim()
        .to_string();
    if secret.is_empty() {
        return Err(("client_secret_file", "is empty".into()));
    }
    Ok(ClientSecret::new(secret))
}

/// An RSA (PKCS#1 or PKCS#8) or P-256 (PKCS#8) private key from a PEM file.
fn read_key(path: Option<&Path>) -> Result<SigningKey, LoadError> {
    let bad = |m: String| ("client_key_file", m);
    let Some(path) = path else {
        return Err(bad("is required with client_auth: private_key_jwt".into()));
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| bad(format!("{}: {e}", path.display())))?
        .ok_or_else(|| bad(format!("{}: no private key in the file", path.display())))?;
    let rng = SystemRandom::new();
    match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
            .map(SigningKey::Rsa)
            .map_err(|e| bad(format!("{}: not a usable RSA key: {e}", path.display()))),
        PrivateKeyDer::Pkcs8(k) => {
            let bytes = k.secret_pkcs8_der();
            if let Ok(rsa) = RsaKeyPair::from_pkcs8(bytes) {
                return Ok(SigningKey::Rsa(rsa));
            }
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes, &rng)
                .map(SigningKey::EcP256)
                .map_err(|_| {
                    bad(format!(
                        "{}: not an RSA (2048 bits or more) or P-256 key",
                        path.display()
                    ))
                })
        }
        _ => Err(bad(format!(
            "{}: an EC key must be PKCS#8 (openssl pkcs8 -topk8 -nocrypt)",
            path.display()
        ))),
    }
}

impl ClientCredentials {
    /// The credentials `client_auth` asks for, read now so a bad file stops the start.
    pub(crate) fn load(cfg: &ProviderConfig) -> Result<ClientCredentials, LoadError> {
        let auth = match cfg.client_auth {
            ClientAuth::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuth::ClientSecretPost => AuthType::RequestBody,
            ClientAuth::PrivateKeyJwt => {
                return Ok(ClientCredentials::KeyJwt {
                    key: Box::new(read_key(cfg.client_key_file.as_deref())?),
                    kid: cfg.client_key_id.clone(),
                })
            }
        };
        Ok(ClientCredentials::Secret {
            secret: read_secret(cfg.client_secret_file.as_deref())?,
            auth,
        })
    }

    /// The secret for the crate's client (None with a key: nothing secret is sent).
    pub(crate) fn secret(&self) -> Option<ClientSecret> {
        match self {
            ClientCredentials::Secret { secret, .. } => Some(secret.clone()),
            ClientCredentials::KeyJwt { .. } => None,
        }
    }

    /// Where the crate puts the client id (and secret): with a key, in the body beside the
    /// assertion.
    pub(crate) fn auth_type(&self) -> AuthType {
        match self {
            ClientCredentials::Secret { auth, .. } => auth.clone(),
            ClientCredentials::KeyJwt { .. } => AuthType::RequestBody,
        }
    }

    /// A fresh client assertion for one request to `token_endpoint`, None with a secret.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
    ) -> Option<Result<String, String>> {
        let ClientCredentials::KeyJwt { key, kid } = self else {
            return None;
        };
        Some(sign_assertion(
            key,
            kid.as_deref(),
            client_id,
            token_endpoint,
        ))
    }
}

fn sign_assertion(
    key: &SigningKey,
    kid: Option<&str>,
    client_id: &str,
    token_endpoint: &str,
) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let alg = match key {
        SigningKey::Rsa(_) => "RS256",
        SigningKey::EcP256(_) => "ES256",
    };
    let mut header = serde_json::json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        // OIDC Core 9: the token endpoint's URL.
        "aud": token_endpoint,
        "jti": hex::encode(rand::random::<[u8; 16]>()),
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = SystemRandom::new();
    let signature = match key {
        SigningKey::Rsa(k) => {
            let mut sig = vec![0u8; k.public().modulus_len()];
            k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                .map_err(|_| "RSA signing failed".to_string())?;
            sig
        }
        SigningKey::EcP256(k) => k
            .sign(&rng, input.as_bytes())
            .map_err(|_| "ECDSA signing failed".to_string())?
            .as_ref()
            .to_vec(),
    };
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(extra: &str) -> ProviderConfig {
        serde_saphyr::from_str(&format!("id: p\nkind: oidc\n{extra}")).unwrap()
    }

    #[test]
    fn a_missing_or_unusable_key_file_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        for extra in [
            "client_auth: private_key_jwt".to_string(),
            format!(
                "client_auth: private_key_jwt\nclient_key_file: {}",
                junk.display()
            ),
            "client_auth: private_key_jwt\nclient_key_file: /nonexistent/key.pem".to_string(),
        ] {
            let Err((key, _)) = ClientCredentials::load(&provider(&extra)) else {
                panic!("{extra} loaded");
            };
            assert_eq!(key, "client_key_file");
        }
        let Err((key, msg)) = ClientCredentials::load(&provider("")) else {
            panic!("no secret loaded");
        };
        assert_eq!((key, msg.as_str()), ("client_secret_file", "is required"));
    }
}
