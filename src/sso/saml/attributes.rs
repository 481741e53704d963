//! From a verified Assertion to the identity SSO hands to Moodle: the user value (the
//! configured attribute, or the NameID), the attributes, and what single logout needs later
//! (NameID with its format and qualifiers, SessionIndex).

use std::collections::BTreeMap;

use samael::schema::Assertion;
use serde::{Deserialize, Serialize};

/// `user_attribute: NameID` takes the subject's NameID instead of an attribute.
pub(crate) const NAME_ID: &str = "NameID";

/// What a single logout to or from the IdP must name: the subject and the IdP's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SamlSubject {
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
}

/// The person an assertion names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SamlIdentity {
    /// The value that fills `sso.moodle_handoff.mapping_field`.
    pub user: String,
    /// Every attribute by Name, and again by FriendlyName where one is given.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// None when the assertion has no NameID (then logout from here cannot name the subject).
    pub subject: Option<SamlSubject>,
}

/// Reads the identity; Err names the missing attribute.
pub(crate) fn identity(
    assertion: &Assertion,
    user_attribute: &str,
) -> Result<SamlIdentity, String> {
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in assertion.attribute_statements.iter().flatten() {
        for attr in &statement.attributes {
            let values: Vec<String> = attr
                .values
                .iter()
                .filter_map(|v| v.value.as_ref())
                .map(|v| v.trim().to_string())
                .collect();
            for name in [&attr.name, &attr.friendly_name].into_iter().flatten() {
                attributes
                    .entry(name.clone())
                    .or_default()
                    .extend(values.iter().cloned());
            }
        }
    }
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .filter(|n| !n.value.trim().is_empty());
    let session_index = assertion
        .authn_statements
        .iter()
        .flatten()
        .find_map(|s| s.session_index.clone());
    let subject = name_id.map(|n| SamlSubject {
        name_id: n.value.trim().to_string(),
        name_id_format: n.format.clone(),
        session_index,
    });
    let user = if user_attribute == NAME_ID {
        subject.as_ref().map(|s| s.name_id.clone())
    } else {
        attributes
            .get(user_attribute)
            .and_then(|v| v.iter().find(|s| !s.is_empty()))
            .cloned()
    }
    .ok_or_else(|| format!("the assertion has no value for user_attribute {user_attribute:?}"))?;
    Ok(SamlIdentity {
        user,
        attributes,
        subject,
    })
}
