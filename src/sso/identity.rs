//! What a finished protocol exchange hands to the edge: who the person is, and the handles the
//! protocol needs later to end that person's sessions (OIDC `sid`/`sub`, SAML NameID +
//! SessionIndex). Every protocol module (OIDC, OAuth 2, SAML) produces an [`Identity`] and gives
//! it to [`crate::sso::finish::finish_login`] together with the [`LoginStart`] it carried
//! through its round trip. Nothing here talks to the network.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A person as a protocol vouched for them. Built by a protocol module after it has verified
/// everything it must (signatures, audience, replay ...); the edge trusts it from here on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// `sso.providers[].id` of the provider that vouched: sessions, metrics and logout are
    /// per provider.
    pub provider: String,
    /// The tenant the login was started for (`sso.tenants[].id`), None for the site itself.
    /// Carried from the [`LoginStart`], so a session is only valid on the tenant that made it.
    pub tenant: Option<String>,
    /// The value of the claim (`user_claim`) or attribute (`user_attribute`) that fills
    /// `sso.moodle_handoff.mapping_field` (a username, email or idnumber, as the site set it).
    pub user: String,
    /// Passed to auth_userkey so it can create or update the user, where the site allows it.
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
    /// Every claim or attribute as text values, for the optional rules a login must meet
    /// (groups, email domains). Multi-valued SAML attributes keep all values.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// How the protocol names this login session, for logout later.
    pub handle: ProtocolHandle,
}

/// The protocol's own name for a login session: what a later logout message refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ProtocolHandle {
    /// OpenID Connect: a back-channel logout token names `sid`, `sub` or both.
    Oidc {
        /// The ID token's `sub`.
        sub: String,
        /// The ID token's `sid`, when the provider sends one.
        sid: Option<String>,
        /// The raw ID token, kept server-side only, sent back as `id_token_hint` at
        /// RP-initiated logout. Never logged.
        id_token: String,
    },
    /// SAML 2.0: a LogoutRequest names the NameID and optionally SessionIndex values.
    Saml {
        /// The Assertion's Subject NameID value.
        name_id: String,
        /// Its Format attribute, repeated in the LogoutRequest this SP sends.
        name_id_format: Option<String>,
        /// Its NameQualifier / SPNameQualifier, repeated in the LogoutRequest too.
        name_qualifier: Option<String>,
        sp_name_qualifier: Option<String>,
        /// The AuthnStatement's SessionIndex, when the IdP sent one.
        session_index: Option<String>,
    },
    /// Plain OAuth 2: no logout protocol; the userinfo subject only names the person.
    OAuth2 { subject: String },
}

/// A reference to sessions, as a logout message names them. See
/// [`crate::sso::session::end_sessions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandleRef<'a> {
    /// Every session of this OIDC `sid` (back-channel logout with `sid`).
    OidcSid(&'a str),
    /// Every session of this OIDC `sub` (back-channel logout with `sub` only).
    OidcSub(&'a str),
    /// Every session of this SAML NameID (a LogoutRequest without SessionIndex).
    SamlNameId(&'a str),
    /// The sessions of this NameID with this SessionIndex (a LogoutRequest with one; call once
    /// per SessionIndex it lists).
    SamlSession {
        name_id: &'a str,
        session_index: &'a str,
    },
}

impl HandleRef<'_> {
    /// The index key under which sessions are found; the provider is part of it, so one
    /// provider's logout never ends another's sessions.
    pub(crate) fn index_key(&self, provider: &str) -> String {
        match self {
            HandleRef::OidcSid(sid) => format!("oidc-sid\0{provider}\0{sid}"),
            HandleRef::OidcSub(sub) => format!("oidc-sub\0{provider}\0{sub}"),
            HandleRef::SamlNameId(n) => format!("saml-nameid\0{provider}\0{n}"),
            HandleRef::SamlSession {
                name_id,
                session_index,
            } => format!("saml-session\0{provider}\0{name_id}\0{session_index}"),
        }
    }
}

impl ProtocolHandle {
    /// Every reference under which a session with this handle must be findable.
    pub(crate) fn refs(&self) -> Vec<HandleRef<'_>> {
        match self {
            ProtocolHandle::Oidc { sub, sid, .. } => {
                let mut r = vec![HandleRef::OidcSub(sub)];
                if let Some(sid) = sid {
                    r.push(HandleRef::OidcSid(sid));
                }
                r
            }
            ProtocolHandle::Saml {
                name_id,
                session_index,
                ..
            } => {
                let mut r = vec![HandleRef::SamlNameId(name_id)];
                if let Some(si) = session_index {
                    r.push(HandleRef::SamlSession {
                        name_id,
                        session_index: si,
                    });
                }
                r
            }
            ProtocolHandle::OAuth2 { .. } => Vec::new(),
        }
    }
}

/// What the login page knew when the person chose a provider, carried by the protocol
/// through its round trip (OIDC: the state entry; SAML: the AuthnRequest / RelayState entry in
/// the store) and handed back to `finish_login`. Serializable for that reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoginStart {
    /// The provider chosen; `finish_login` refuses an Identity from another one.
    pub provider: String,
    /// The tenant the login page was shown for (None: the site itself).
    pub tenant: Option<String>,
    /// Where the person goes after login: a path (+ query) under wwwroot, already validated by
    /// `return_url::validate` (and validated again by `finish_login`).
    pub return_to: String,
}
