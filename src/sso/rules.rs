//! Optional rules a login must meet before it is handed to Moodle (as oauth2-proxy's
//! allowed groups and email domains, or mod_auth_mellon's MellonCond).

use serde::Deserialize;

use super::identity::Identity;

/// One rule: the claim/attribute must have one of the values, or (for `email_domains`) the
/// identity's email must end in `@` + one of the domains. Every rule must hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The claim or attribute to look at (e.g. `groups`, `eduPersonAffiliation`).
    #[serde(default)]
    pub claim: Option<String>,
    /// Values of which at least one must be present.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// Email domains of which the identity's email must be in one (exact, not a suffix).
    #[serde(default)]
    pub email_domains: Vec<String>,
}

/// Ok when every rule holds; Err says which did not (for the log, not the page).
pub(crate) fn check(rules: &[Rule], id: &Identity) -> Result<(), String> {
    for (i, r) in rules.iter().enumerate() {
        if let Some(claim) = &r.claim {
            let values = id.attributes.get(claim).map(Vec::as_slice).unwrap_or(&[]);
            if !values.iter().any(|v| r.any_of.contains(v)) {
                return Err(format!(
                    "rules[{i}]: {claim} has none of the required values"
                ));
            }
        }
        if !r.email_domains.is_empty() {
            let domain = id
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            let ok =
                domain.is_some_and(|d| r.email_domains.iter().any(|x| x.eq_ignore_ascii_case(&d)));
            if !ok {
                return Err(format!("rules[{i}]: email domain not allowed"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sso::identity::ProtocolHandle;

    fn id(groups: &[&str], email: &str) -> Identity {
        Identity {
            provider: "p".into(),
            tenant: None,
            user: "u".into(),
            firstname: None,
            lastname: None,
            email: Some(email.into()),
            attributes: [(
                "groups".to_string(),
                groups.iter().map(|g| g.to_string()).collect(),
            )]
            .into_iter()
            .collect(),
            handle: ProtocolHandle::OAuth2 {
                subject: "u".into(),
            },
        }
    }

    #[test]
    fn claim_values_and_email_domains_must_match() {
        let rules = vec![
            Rule {
                claim: Some("groups".into()),
                any_of: vec!["staff".into()],
                email_domains: vec![],
            },
            Rule {
                claim: None,
                any_of: vec![],
                email_domains: vec!["example.edu".into()],
            },
        ];
        assert!(check(&rules, &id(&["staff"], "a@example.edu")).is_ok());
        assert!(check(&rules, &id(&["students"], "a@example.edu")).is_err());
        // Exact domain, not a suffix.
        assert!(check(&rules, &id(&["staff"], "a@evilexample.edu")).is_err());
        assert!(check(&rules, &id(&["staff"], "a@sub.example.edu")).is_err());
    }
}
