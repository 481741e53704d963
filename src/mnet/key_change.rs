//! A peer's changed key. Moodle takes a peer's new certificate whenever it sees one (a key
//! swap, or a refetch when a call's signature fails); here each peer's `on_key_change` says
//! whether it is accepted so (written over the peer's `cert_file`, used at once) or held for
//! the operator (saved beside it as `cert_file.offered`, the pinned key stays). Either way it
//! is logged and counted in `moodle_edge_mnet_peer_key_changes_total{peer,action}`.
//!
//! Phases: a certificate arrives (`offered_by_keyswap`, or `refetch`: the peer's
//! `/mnet/publickey.php` fetched over verified TLS after a call's signature failed, at most
//! once per `REFETCH_INTERVAL` per peer so that forged calls cannot make the proxy fetch at
//! will); compared with the pinned one by fingerprint; the policy applied (`apply`).
//!
//! A keyswap call is unauthenticated (anyone can send one naming a peer), so a key it offers
//! is never used as it comes: `hold` saves it for the operator to check, and `accept` only
//! takes it as a reason to fetch the peer's key from the peer itself, which is then applied.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};

use super::config::KeyChangePolicy;
use super::keys::PeerCert;
use super::peers::Peer;
use super::MnetState;
use crate::proxy::upstream::connector::{client_tls, web_roots};

/// The shortest time between two fetches of one peer's key after failed signatures.
pub(crate) const REFETCH_INTERVAL: i64 = 300;

/// How a changed key was learned (for the log).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Keyswap,
    Refetch,
}

/// A certificate offered in a keyswap call naming `peer`. Under `hold` it is applied (saved
/// for the operator); under `accept` true is returned: fetch the peer's key (`refetch`) to
/// confirm, since the caller proved nothing.
pub(crate) fn offered_by_keyswap(state: &MnetState, peer: &Peer, offered: PeerCert) -> bool {
    if offered.fingerprint == peer.cert.load().fingerprint {
        return false;
    }
    match peer.on_key_change {
        KeyChangePolicy::Hold => {
            apply(state, peer, offered, Source::Keyswap);
            false
        }
        KeyChangePolicy::Accept => {
            tracing::info!(
                peer = %peer.wwwroot,
                offered = %offered.fingerprint,
                "mnet: keyswap offered a changed key; fetching the peer's key to confirm"
            );
            true
        }
    }
}

/// Applies the peer's policy to a certificate that came from `source`; true when the key in
/// use changed.
pub(crate) fn apply(state: &MnetState, peer: &Peer, offered: PeerCert, source: Source) -> bool {
    let pinned = peer.cert.load();
    if offered.fingerprint == pinned.fingerprint {
        return false;
    }
    let action = match peer.on_key_change {
        KeyChangePolicy::Hold => "held",
        KeyChangePolicy::Accept => "accepted",
    };
    tracing::warn!(
        peer = %peer.wwwroot,
        source = ?source,
        offered = %offered.fingerprint,
        pinned = %pinned.fingerprint,
        action,
        "mnet: a peer's key changed"
    );
    state
        .metrics
        .key_changes
        .with_label_values(&[peer.wwwroot.as_str(), action])
        .inc();
    match peer.on_key_change {
        KeyChangePolicy::Hold => {
            let path = sibling(&peer.cert_file, "offered");
            if let Err(e) = write_atomically(&path, &offered.cert_pem) {
                tracing::warn!(path = %path.display(), error = %e, "mnet: cannot save the offered key");
            }
            false
        }
        KeyChangePolicy::Accept => {
            if let Err(e) = write_atomically(&peer.cert_file, &offered.cert_pem) {
                // Used until the next reload, which reads the file again.
                tracing::error!(
                    path = %peer.cert_file.display(),
                    error = %e,
                    "mnet: cannot write the accepted key; a reload returns to the old one"
                );
            }
            peer.cert.store(Arc::new(offered));
            true
        }
    }
}

/// After a call from `peer` failed its signature check, or a keyswap offered a changed key
/// under `accept`: fetch the peer's current certificate (unless fetched within
/// `REFETCH_INTERVAL`) and apply the policy. True when the key in use changed, so a failed
/// call is worth checking again.
pub(crate) async fn refetch(state: &MnetState, peer: &Peer, now: i64) -> bool {
    let last = peer.last_key_fetch.load(Ordering::Relaxed);
    if now.saturating_sub(last) < REFETCH_INTERVAL
        || peer
            .last_key_fetch
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    let url = format!("{}/mnet/publickey.php", peer.wwwroot);
    match fetch(&url).await {
        Ok(pem) => match PeerCert::from_pem(&pem, &url) {
            Ok(cert) => apply(state, peer, cert, Source::Refetch),
            Err(e) => {
                tracing::warn!(peer = %peer.wwwroot, error = %e, "mnet: the peer's publickey.php holds no valid certificate");
                false
            }
        },
        Err(e) => {
            tracing::warn!(peer = %peer.wwwroot, error = %e, "mnet: cannot fetch the peer's key");
            false
        }
    }
}

/// GET `url` over verified TLS (plain HTTP for an http:// peer, as configured), 10 s, at most
/// 64 KiB.
async fn fetch(url: &str) -> Result<String, String> {
    let tls = client_tls(web_roots()).map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(https);
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `text` to `path` through a temporary file and a rename, so a reload never reads half.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = sibling(path, "tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mnet::keys::{self, Subject};

    fn cert(wwwroot: &str) -> PeerCert {
        let pair = keys::generate(
            &Subject {
                wwwroot,
                organization: "P",
                country: "NZ",
                locality: "W",
                email: "a@p.example",
            },
            1,
        )
        .unwrap();
        PeerCert::from_pem(&pair.cert_pem, "t").unwrap()
    }

    #[test]
    fn sibling_names() {
        assert_eq!(
            sibling(Path::new("/etc/p.pem"), "offered"),
            PathBuf::from("/etc/p.pem.offered")
        );
        let c = cert("https://p.example");
        assert!(!c.fingerprint.is_empty());
    }
}
