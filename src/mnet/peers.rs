//! The peers the site trusts, from `mnet.peers`: each one's wwwroot, certificate, allowed
//! methods and source networks. Looked up by the wwwroot a message names.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::config::{KeyChangePolicy, MnetPeerConfig};
use super::keys::{self, KeyError, PeerCert};

pub struct Peer {
    /// As configured, without a trailing slash (Moodle's mnet_host.wwwroot form).
    pub wwwroot: String,
    /// Verifies the peer's signatures and receives our sealed answers; swapped when a changed
    /// key is accepted (`on_key_change: accept`).
    pub cert: ArcSwap<PeerCert>,
    /// Where an accepted key is written, so that a reload keeps it.
    pub cert_file: PathBuf,
    /// Hold or accept a changed key.
    pub on_key_change: KeyChangePolicy,
    /// Unix seconds of the last fetch of its publickey.php: bounds the fetches that forged
    /// calls can cause (see `key_change`).
    pub last_key_fetch: AtomicI64,
    /// Methods it may call (a trailing `*` matches a prefix).
    pub allow: Vec<String>,
    /// Where it may call from (empty: anywhere).
    pub networks: Vec<IpNet>,
}

impl Peer {
    pub fn allows(&self, method: &str) -> bool {
        self.allow.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => a == method,
        })
    }

    pub fn allows_network(&self, ip: IpAddr) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip))
    }
}

pub struct Peers {
    list: Vec<Arc<Peer>>,
}

pub(crate) fn normalize(wwwroot: &str) -> &str {
    wwwroot.trim().trim_end_matches('/')
}

impl Peers {
    pub fn load(configs: &[MnetPeerConfig]) -> Result<Peers, KeyError> {
        let list = configs
            .iter()
            .map(|c| {
                Ok(Arc::new(Peer {
                    wwwroot: normalize(&c.wwwroot).to_string(),
                    cert: ArcSwap::from_pointee(keys::load_peer_cert(&c.cert_file)?),
                    cert_file: c.cert_file.clone(),
                    on_key_change: c.on_key_change,
                    last_key_fetch: AtomicI64::new(i64::MIN),
                    allow: c.allow.clone(),
                    networks: c.networks.clone(),
                }))
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(Peers { list })
    }

    pub fn get(&self, wwwroot: &str) -> Option<&Arc<Peer>> {
        let wanted = normalize(wwwroot);
        self.list.iter().find(|p| p.wwwroot == wanted)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_exact_and_prefix() {
        let pair = keys::generate(
            &keys::Subject {
                wwwroot: "https://p.example",
                organization: "P",
                country: "NZ",
                locality: "W",
                email: "a@p.example",
            },
            1,
        )
        .unwrap();
        let peer = Peer {
            wwwroot: "https://p.example".into(),
            cert: ArcSwap::from_pointee(PeerCert::from_pem(&pair.cert_pem, "t").unwrap()),
            cert_file: PathBuf::new(),
            on_key_change: KeyChangePolicy::Hold,
            last_key_fetch: AtomicI64::new(i64::MIN),
            allow: vec!["system/listMethods".into(), "auth/mnet/*".into()],
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(peer.allows("system/listMethods"));
        assert!(peer.allows("auth/mnet/auth.php/user_authorise"));
        assert!(!peer.allows("system/listServices"));
        assert!(peer.allows_network("10.1.2.3".parse().unwrap()));
        assert!(!peer.allows_network("192.0.2.1".parse().unwrap()));
    }
}
