//! Single logout over HTTP-Redirect at /auth/saml/slo, both ways.
//!
//! From the IdP (`SAMLRequest`): read, pick the provider by Issuer, require the URL signature
//! by the IdP's metadata key, check Destination, age and replay, end the sessions of that
//! subject, and answer with a signed LogoutResponse. From here (`start`): a signed
//! LogoutRequest naming the subject and its SessionIndex, remembered until the IdP's
//! LogoutResponse (`SAMLResponse`) comes back and is checked the same way.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::acs::Refusal;
use super::attributes::SamlSubject;
use super::login::new_id;
use super::logout_message::{self, SUCCESS};
use super::pending::{self, PendingLogout};
use super::provider::SamlProvider;
use super::redirect_binding::{self, Kind, Received};
use super::replay;
use crate::store::Store;

/// What the IdP asked to end: every session of this subject (at these IdP sessions, when
/// SessionIndex values are given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogoutOrder {
    pub provider: String,
    pub name_id: String,
    pub session_indexes: Vec<String>,
}

/// A LogoutRequest from the IdP, checked, with the answer to send once the sessions are ended.
#[derive(Debug)]
pub(crate) struct IdpLogout {
    pub order: LogoutOrder,
    /// Where to send the browser: the signed LogoutResponse at the IdP.
    pub answer_url: String,
}

fn refuse(provider: Option<&str>, reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
        provider: provider.map(str::to_string),
    }
}

fn by_issuer<'a>(
    providers: &'a [Arc<SamlProvider>],
    issuer: Option<&str>,
) -> Result<&'a Arc<SamlProvider>, Refusal> {
    providers
        .iter()
        .find(|p| {
            p.idp()
                .is_some_and(|i| Some(i.entity_id.as_str()) == issuer)
        })
        .ok_or_else(|| {
            refuse(
                None,
                "unknown_issuer",
                format!("no provider has IdP {issuer:?}"),
            )
        })
}

fn verify(provider: &SamlProvider, received: &Received) -> Result<(), Refusal> {
    let idp = provider.idp().ok_or_else(|| {
        refuse(
            Some(&provider.id),
            "no_metadata",
            "the IdP metadata is not read yet",
        )
    })?;
    if !received.is_signed() {
        return Err(refuse(
            Some(&provider.id),
            "signature",
            "the logout message is not signed",
        ));
    }
    received
        .verify(&idp.signing_keys, provider.opts.allow_sha1)
        .map_err(|e| refuse(Some(&provider.id), "signature", e.to_string()))
}

fn check_destination(provider: &SamlProvider, destination: Option<&str>) -> Result<(), Refusal> {
    match destination {
        Some(d) if d != provider.sp.slo_url => Err(refuse(
            Some(&provider.id),
            "destination",
            format!("Destination {d:?} is not this SLO endpoint"),
        )),
        _ => Ok(()),
    }
}

/// Checks a LogoutRequest from the IdP (the raw query of GET /auth/saml/slo).
pub(crate) async fn from_idp(
    providers: &[Arc<SamlProvider>],
    store: &Store,
    query: &str,
) -> Result<IdpLogout, Refusal> {
    let received = redirect_binding::receive(query, Kind::Request)
        .map_err(|e| refuse(None, "malformed", e.to_string()))?;
    let request =
        logout_message::read_request(&received.xml).map_err(|e| refuse(None, "malformed", e))?;
    let provider = by_issuer(providers, request.issuer.as_deref())?;
    let id = Some(provider.id.as_str());
    verify(provider, &received)?;
    check_destination(provider, request.destination.as_deref())?;
    let skew = chrono::Duration::from_std(provider.opts.max_clock_skew.get()).unwrap_or_default();
    let age = chrono::Duration::from_std(provider.opts.max_response_age.get()).unwrap_or_default();
    let now = Utc::now();
    if request.issue_instant + age + skew < now || request.issue_instant - skew > now {
        return Err(refuse(
            id,
            "expired",
            "the LogoutRequest's IssueInstant is out of range",
        ));
    }
    if request.not_on_or_after.is_some_and(|t| t + skew <= now) {
        return Err(refuse(
            id,
            "expired",
            "the LogoutRequest's NotOnOrAfter has passed",
        ));
    }
    let issuer = request.issuer.clone().unwrap_or_default();
    let keep = provider.opts.max_response_age.get() + 2 * provider.opts.max_clock_skew.get();
    let first = replay::first_use(store, "logout", &issuer, &request.id, keep)
        .await
        .map_err(|e| refuse(id, "store", e.to_string()))?;
    if !first {
        return Err(refuse(
            id,
            "replay",
            format!("LogoutRequest {:?} was already used", request.id),
        ));
    }
    let idp = provider
        .idp()
        .ok_or_else(|| refuse(id, "no_metadata", "the IdP metadata is not read yet"))?;
    let endpoint = idp.slo_redirect.clone().ok_or_else(|| {
        refuse(
            id,
            "no_slo",
            "the IdP metadata has no HTTP-Redirect SingleLogoutService",
        )
    })?;
    let answer = logout_message::build_response(
        &new_id(),
        &provider.sp.entity_id,
        &endpoint.response_location,
        &request.id,
        SUCCESS,
    );
    let query = redirect_binding::send_query(
        &answer,
        Kind::Response,
        received.relay_state.as_deref(),
        provider.keys.as_ref().map(|k| &k.key),
    )
    .map_err(|e| refuse(id, "sign", e.to_string()))?;
    Ok(IdpLogout {
        order: LogoutOrder {
            provider: provider.id.clone(),
            name_id: request.name_id,
            session_indexes: request.session_indexes,
        },
        answer_url: join(&endpoint.response_location, &query),
    })
}

/// Checks the IdP's LogoutResponse to a logout sent from here; returns where to send the
/// browser next.
pub(crate) async fn answer_from_idp(
    providers: &[Arc<SamlProvider>],
    store: &Store,
    query: &str,
) -> Result<String, Refusal> {
    let received = redirect_binding::receive(query, Kind::Response)
        .map_err(|e| refuse(None, "malformed", e.to_string()))?;
    let response =
        logout_message::read_response(&received.xml).map_err(|e| refuse(None, "malformed", e))?;
    let provider = by_issuer(providers, response.issuer.as_deref())?;
    let id = Some(provider.id.as_str());
    verify(provider, &received)?;
    check_destination(provider, response.destination.as_deref())?;
    let request_id = response.in_response_to.as_deref().ok_or_else(|| {
        refuse(
            id,
            "unknown_request",
            "the LogoutResponse has no InResponseTo",
        )
    })?;
    let pending = pending::take_logout(store, request_id)
        .await
        .map_err(|e| refuse(id, "store", e.to_string()))?
        .filter(|p| p.provider == provider.id)
        .ok_or_else(|| {
            refuse(
                id,
                "unknown_request",
                "InResponseTo names no logout this proxy has outstanding",
            )
        })?;
    if response.status != SUCCESS {
        // The session here is already gone; the IdP kept its own. Say so, go on.
        tracing::warn!(provider = %provider.id, status = %response.status, "saml: the IdP did not confirm the logout");
    }
    Ok(pending.return_to)
}

/// Starts a logout at the IdP for `subject`; None when the IdP does no single logout over
/// HTTP-Redirect (then ending the session here is all there is).
pub(crate) async fn start(
    provider: &SamlProvider,
    store: &Store,
    subject: &SamlSubject,
    return_to: &str,
) -> Result<Option<String>, Refusal> {
    let id = Some(provider.id.as_str());
    let Some(endpoint) = provider.idp().and_then(|i| i.slo_redirect.clone()) else {
        return Ok(None);
    };
    let request_id = new_id();
    let xml = logout_message::build_request(
        &request_id,
        &provider.sp.entity_id,
        &endpoint.location,
        subject,
    );
    let query = redirect_binding::send_query(
        &xml,
        Kind::Request,
        None,
        provider.keys.as_ref().map(|k| &k.key),
    )
    .map_err(|e| refuse(id, "sign", e.to_string()))?;
    pending::remember_logout(
        store,
        &request_id,
        &PendingLogout {
            provider: provider.id.clone(),
            return_to: return_to.to_string(),
        },
        LOGOUT_WAIT,
    )
    .await
    .map_err(|e| refuse(id, "store", e.to_string()))?;
    Ok(Some(join(&endpoint.location, &query)))
}

/// How long a logout sent from here waits for its answer.
const LOGOUT_WAIT: Duration = Duration::from_secs(600);

fn join(base: &str, query: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}
