//! The peers the site trusts, from `mnet.peers`: each one's wwwroot, certificate, allowed
//! methods and source networks. Looked up by the wwwroot a message names.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::config::MnetPeerConfig;
use super::keys::{self, KeyError, PeerCert};

pub struct Peer {
    /// As configured, without a trailing slash (Moodle's mnet_host.wwwroot form).
    pub wwwroot: String,
    /// Verifies the peer's signatures and receives our sealed answers.
    pub cert: PeerCert,
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

    pub fn from_network(&self, ip: IpAddr) -> bool {
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
                    cert: keys::load_peer_cert(&c.cert_file)?,
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
            cert: PeerCert::from_pem(&pair.cert_pem, "t").unwrap(),
            allow: vec!["system/listMethods".into(), "auth/mnet/*".into()],
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(peer.allows("system/listMethods"));
        assert!(peer.allows("auth/mnet/auth.php/user_authorise"));
        assert!(!peer.allows("system/listServices"));
        assert!(peer.from_network("10.1.2.3".parse().unwrap()));
        assert!(!peer.from_network("192.0.2.1".parse().unwrap()));
    }
}
