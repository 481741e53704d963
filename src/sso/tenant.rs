//! Tenants: which one a request belongs to (by host and/or path prefix) and which providers
//! its login page offers (availability all / only / except).

use std::sync::Arc;

use super::config::{Availability, ProviderConfig, SsoConfig, TenantConfig};

/// A tenant as the SSO stage uses it.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub id: String,
    /// Lower-case host names (no port) that belong to this tenant; empty = any host.
    pub hosts: Vec<String>,
    /// A path prefix (e.g. `/acme/`) that belongs to this tenant; None = any path.
    pub path_prefix: Option<String>,
    /// The config as written (labels, logo, colours, local login switch).
    pub config: TenantConfig,
}

/// All tenants, in config order (the first match wins; a host-and-prefix match beats a
/// host-only one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tenants {
    list: Vec<Arc<Tenant>>,
}

impl Tenants {
    pub(crate) fn build(cfg: &SsoConfig) -> Tenants {
        let list = cfg
            .tenants
            .iter()
            .map(|t| {
                Arc::new(Tenant {
                    id: t.id.clone(),
                    hosts: t.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    path_prefix: t.path_prefix.clone(),
                    config: t.clone(),
                })
            })
            .collect();
        Tenants { list }
    }

    /// The tenant of a request to `host` (lower-case, no port) for `path`.
    pub(crate) fn resolve(&self, host: &str, path: &str) -> Option<Arc<Tenant>> {
        let host_ok = |t: &Tenant| t.hosts.is_empty() || t.hosts.iter().any(|h| h == host);
        let prefix_ok = |t: &Tenant| match &t.path_prefix {
            Some(p) => path.starts_with(p.as_str()),
            None => true,
        };
        // Most specific first: a tenant that names both a host and a prefix.
        let score = |t: &Tenant| (t.path_prefix.is_some() as u8) * 2 + (!t.hosts.is_empty() as u8);
        self.list
            .iter()
            .filter(|t| {
                host_ok(t) && prefix_ok(t) && (t.path_prefix.is_some() || !t.hosts.is_empty())
            })
            .max_by_key(|t| score(t))
            .cloned()
    }

    /// A tenant by id, if it may be chosen on this host (the `tenant` parameter of the login
    /// page and the tenant selector).
    pub(crate) fn by_id_on_host(&self, id: &str, host: &str) -> Option<Arc<Tenant>> {
        self.list
            .iter()
            .find(|t| t.id == id && (t.hosts.is_empty() || t.hosts.iter().any(|h| h == host)))
            .cloned()
    }

    pub(crate) fn all(&self) -> &[Arc<Tenant>] {
        &self.list
    }
}

/// Whether a provider is offered on a tenant's login page (None = the site itself, which
/// sees every provider whose availability is `all` or `except`).
pub(crate) fn provider_available(p: &ProviderConfig, tenant: Option<&str>) -> bool {
    let listed = tenant.is_some_and(|t| p.tenants.iter().any(|x| x == t));
    match p.availability {
        Availability::All => true,
        Availability::Only => listed,
        Availability::Except => !listed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Tenants {
        let cfg: SsoConfig = serde_saphyr::from_str(
            r#"
moodle_handoff: { token_file: /dev/null }
tenants:
  - id: acme
    hosts: ["acme.lms.example.edu"]
  - id: beta
    path_prefix: /beta/
  - id: acme-lab
    hosts: ["acme.lms.example.edu"]
    path_prefix: /lab/
"#,
        )
        .unwrap();
        Tenants::build(&cfg)
    }

    #[test]
    fn by_host_by_prefix_and_most_specific_first() {
        let t = tenants();
        let id = |h: &str, p: &str| t.resolve(h, p).map(|t| t.id.clone());
        assert_eq!(id("acme.lms.example.edu", "/my/").as_deref(), Some("acme"));
        assert_eq!(
            id("acme.lms.example.edu", "/lab/x").as_deref(),
            Some("acme-lab")
        );
        assert_eq!(
            id("lms.example.edu", "/beta/course").as_deref(),
            Some("beta")
        );
        assert_eq!(id("lms.example.edu", "/my/"), None);
        assert!(t.by_id_on_host("acme", "lms.example.edu").is_none());
        assert!(t.by_id_on_host("beta", "lms.example.edu").is_some());
    }
}
