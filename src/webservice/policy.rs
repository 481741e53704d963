//! Which functions an entry point may serve, and from where a restricted token may be used.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::webservice::config::{FunctionPolicy, TokenNetworks};

/// Function-name patterns: exact names or a trailing `*` for a prefix. Compared lower-cased,
/// like the names the guard reads (see `params::merge`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Patterns {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Patterns {
    pub(crate) fn new(list: &[String]) -> Self {
        let mut p = Patterns::default();
        for item in list {
            let item = item.trim().to_ascii_lowercase();
            match item.strip_suffix('*') {
                Some(prefix) => p.prefixes.push(prefix.to_owned()),
                None => p.exact.push(item),
            }
        }
        p
    }

    pub(crate) fn matches(&self, function: &str) -> bool {
        self.exact.iter().any(|e| e == function)
            || self
                .prefixes
                .iter()
                .any(|pre| function.starts_with(pre.as_str()))
    }

    /// The exact names (metrics keep a label for each).
    pub(crate) fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().map(String::as_str)
    }
}

/// Why the edge refused a call. Each is a label value of `policy_refusals_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyRefusal {
    /// On a deny list.
    FunctionDenied,
    /// Not on the path's allow list, or no function named where an allow list is set.
    FunctionNotAllowed,
    /// The token is bound to networks the client is not in.
    TokenNetwork,
    /// A check that matters could not see every parameter (body beyond `max_inspect_body`, or a
    /// key given twice with different values): refused rather than guessed.
    Uninspectable,
}

impl PolicyRefusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PolicyRefusal::FunctionDenied => "function_denied",
            PolicyRefusal::FunctionNotAllowed => "function_not_allowed",
            PolicyRefusal::TokenNetwork => "token_network",
            PolicyRefusal::Uninspectable => "uninspectable",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct PathPolicy {
    allow: Option<Patterns>,
    deny: Patterns,
}

#[derive(Debug, Default)]
pub(crate) struct Policy {
    paths: HashMap<String, PathPolicy>,
    /// Normalised token -> networks it may be used from.
    networks: HashMap<String, Vec<IpNet>>,
}

/// A config problem, with the key path that names it.
#[derive(Debug)]
pub(crate) struct PolicyConfigError {
    pub key: String,
    pub message: String,
}

impl Policy {
    pub(crate) fn new(
        functions: &[FunctionPolicy],
        networks: &[TokenNetworks],
    ) -> Result<Policy, PolicyConfigError> {
        let mut policy = Policy::default();
        for (i, fp) in functions.iter().enumerate() {
            if !fp.path.starts_with('/') {
                return Err(PolicyConfigError {
                    key: format!("webservice.function_policy[{i}].path"),
                    message: format!("must be a path starting with '/', not {:?}", fp.path),
                });
            }
            // Several entries for one path add up: allow lists are joined, deny lists too.
            let entry = policy.paths.entry(fp.path.clone()).or_default();
            if let Some(allow) = &fp.allow {
                let add = Patterns::new(allow);
                let target = entry.allow.get_or_insert_with(Patterns::default);
                target.exact.extend(add.exact);
                target.prefixes.extend(add.prefixes);
            }
            if let Some(deny) = &fp.deny {
                let add = Patterns::new(deny);
                entry.deny.exact.extend(add.exact);
                entry.deny.prefixes.extend(add.prefixes);
            }
        }
        for (i, tn) in networks.iter().enumerate() {
            let key = format!("webservice.token_networks[{i}].token_file");
            let text = std::fs::read_to_string(&tn.token_file).map_err(|e| PolicyConfigError {
                key: key.clone(),
                message: format!("cannot read {}: {e}", tn.token_file.display()),
            })?;
            let token = text.trim();
            if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PolicyConfigError {
                    key,
                    message: format!(
                        "{} must hold a token of 32 hex characters",
                        tn.token_file.display()
                    ),
                });
            }
            if tn.networks.is_empty() {
                return Err(PolicyConfigError {
                    key: format!("webservice.token_networks[{i}].networks"),
                    message: "must list at least one network".into(),
                });
            }
            policy
                .networks
                .entry(token.to_ascii_lowercase())
                .or_default()
                .extend(tn.networks.iter().copied());
        }
        Ok(policy)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.networks.is_empty()
    }

    pub(crate) fn has_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    /// All exact function names the policy mentions.
    pub(crate) fn function_names(&self) -> impl Iterator<Item = &str> {
        self.paths.values().flat_map(|p| {
            p.deny
                .exact_names()
                .chain(p.allow.iter().flat_map(|a| a.exact_names()))
        })
    }

    /// Checks one call. `entry_path` is the configured entry point the request path maps to;
    /// `function` and `token` are in their normal forms; `complete` says every parameter was
    /// seen.
    ///
    /// Decisions: deny wins over allow. Where an allow list is set, a call naming no function is
    /// refused (Moodle would refuse it too, and it is the safer reading). Where only a deny list
    /// is set, such a call goes on to Moodle, which answers it. Wherever a list or a network
    /// rule could be decided by a value the edge did not see, the call is refused.
    pub(crate) fn check(
        &self,
        entry_path: Option<&str>,
        function: Option<&str>,
        token: Option<&str>,
        client_ip: IpAddr,
        complete: bool,
    ) -> Result<(), PolicyRefusal> {
        if let Some(rules) = entry_path.and_then(|p| self.paths.get(p)) {
            if !complete {
                return Err(PolicyRefusal::Uninspectable);
            }
            match function {
                Some(f) => {
                    if rules.deny.matches(f) {
                        return Err(PolicyRefusal::FunctionDenied);
                    }
                    if rules.allow.as_ref().is_some_and(|a| !a.matches(f)) {
                        return Err(PolicyRefusal::FunctionNotAllowed);
                    }
                }
                None if rules.allow.is_some() => return Err(PolicyRefusal::FunctionNotAllowed),
                None => {}
            }
        }
        if !self.networks.is_empty() {
            if !complete {
                return Err(PolicyRefusal::Uninspectable);
            }
            if let Some(nets) = token.and_then(|t| self.networks.get(t)) {
                let ip = canonical_ip(client_ip);
                if !nets.iter().any(|n| n.contains(&ip)) {
                    return Err(PolicyRefusal::TokenNetwork);
                }
            }
        }
        Ok(())
    }
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is matched as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fp(path: &str, allow: Option<&[&str]>, deny: Option<&[&str]>) -> FunctionPolicy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        FunctionPolicy {
            path: path.into(),
            allow: allow.map(v),
            deny: deny.map(v),
        }
    }
    const REST: &str = "/webservice/rest/server.php";
    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn wildcards_and_deny_wins() {
        let p = Policy::new(
            &[fp(
                REST,
                Some(&["core_course_*", "core_webservice_get_site_info"]),
                Some(&["core_course_delete_*"]),
            )],
            &[],
        )
        .unwrap();
        let check = |f: Option<&str>| p.check(Some(REST), f, None, IP, true);
        assert_eq!(check(Some("core_course_get_courses")), Ok(()));
        assert_eq!(check(Some("core_webservice_get_site_info")), Ok(()));
        assert_eq!(
            check(Some("core_course_delete_courses")),
            Err(PolicyRefusal::FunctionDenied)
        );
        assert_eq!(
            check(Some("core_user_create_users")),
            Err(PolicyRefusal::FunctionNotAllowed)
        );
        assert_eq!(check(None), Err(PolicyRefusal::FunctionNotAllowed));
        assert_eq!(
            p.check(Some(REST), Some("core_course_get_courses"), None, IP, false),
            Err(PolicyRefusal::Uninspectable)
        );
        // Other paths are not affected.
        assert_eq!(
            p.check(
                Some("/webservice/soap/server.php"),
                Some("x"),
                None,
                IP,
                false
            ),
            Ok(())
        );
        assert_eq!(p.check(None, Some("x"), None, IP, true), Ok(()));
    }

    #[test]
    fn deny_only_lets_functionless_calls_through() {
        let p = Policy::new(&[fp(REST, None, Some(&["*"]))], &[]).unwrap();
        assert_eq!(p.check(Some(REST), None, None, IP, true), Ok(()));
        assert_eq!(
            p.check(Some(REST), Some("a"), None, IP, true),
            Err(PolicyRefusal::FunctionDenied)
        );
    }

    #[test]
    fn token_networks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let mut f = std::fs::File::create(&file).unwrap();
        writeln!(f, "  0123456789ABCDEF0123456789abcdef  ").unwrap();
        let tn = TokenNetworks {
            token_file: file.clone(),
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        let p = Policy::new(&[], &[tn]).unwrap();
        let tok = Some("0123456789abcdef0123456789abcdef");
        assert_eq!(p.check(None, None, tok, IP, true), Ok(()));
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
        assert_eq!(p.check(None, None, tok, mapped, true), Ok(()));
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            p.check(None, None, tok, outside, true),
            Err(PolicyRefusal::TokenNetwork)
        );
        assert_eq!(p.check(None, None, Some("other"), outside, true), Ok(()));
        assert_eq!(
            p.check(None, None, None, outside, false),
            Err(PolicyRefusal::Uninspectable)
        );

        std::fs::write(&file, "not-a-token").unwrap();
        let bad = TokenNetworks {
            token_file: file,
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        let err = Policy::new(&[], &[bad.clone(), bad]).unwrap_err();
        assert_eq!(err.key, "webservice.token_networks[0].token_file");
    }
}
