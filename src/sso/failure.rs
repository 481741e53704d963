//! Why a login was refused, as the metrics label, the log line and the page say it. A refused
//! login always ends on a page that explains it and offers a fresh start: never a redirect
//! back into the flow (which would loop).

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

use super::browser::BrowserRequest;
use super::html::escape;
use super::SsoState;

/// Why a login failed: the `reason` label of `moodle_edge_sso_login_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureReason {
    /// A signature did not verify (ID token, SAML Response/Assertion, logout token).
    BadSignature,
    /// A one-time value seen twice (authorization code, assertion ID, jti).
    Replay,
    /// Outside its validity window (exp/iat, NotBefore/NotOnOrAfter, a flow that took too long).
    Expired,
    /// Audience, azp, Recipient or Destination not this edge.
    Audience,
    /// The OIDC state (or SAML InResponseTo / RelayState) is unknown or not this browser's.
    State,
    /// The ID token's nonce is not the one this browser's flow sent.
    Nonce,
    /// Any other protocol rule broken (issuer, algorithm, missing claim, malformed message).
    Protocol,
    /// The provider answered with an error, or could not be reached.
    Provider,
    /// Moodle refused or failed the auth_userkey hand-off.
    Handoff,
    /// The identity did not meet the provider's or tenant's rules.
    RuleRefused,
    /// The shared store (Redis) failed: new logins fail closed (store.on_error).
    StoreUnavailable,
}

impl FailureReason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureReason::BadSignature => "bad_signature",
            FailureReason::Replay => "replay",
            FailureReason::Expired => "expired",
            FailureReason::Audience => "audience",
            FailureReason::State => "state",
            FailureReason::Nonce => "nonce",
            FailureReason::Protocol => "protocol",
            FailureReason::Provider => "provider",
            FailureReason::Handoff => "handoff",
            FailureReason::RuleRefused => "rule_refused",
            FailureReason::StoreUnavailable => "store_unavailable",
        }
    }

    /// What the person is told (the detail goes to the log only).
    fn public_message(self) -> &'static str {
        match self {
            FailureReason::Handoff => "Moodle did not accept the sign-in.",
            FailureReason::RuleRefused => "Your account is not allowed to sign in here.",
            FailureReason::Provider => "The identity provider could not complete the sign-in.",
            FailureReason::StoreUnavailable => {
                "Sign-in is unavailable for a moment. Pages that need no sign-in still work; please try again in a few minutes."
            }
            FailureReason::Expired | FailureReason::State => {
                "The sign-in took too long or was started in another window."
            }
            _ => "The sign-in could not be verified.",
        }
    }
}

/// Counts, logs (reason and detail, never a token) and answers a refused login with a page
/// that says what happened and links to a fresh login page.
pub(crate) fn login_failed(
    sso: &SsoState,
    browser: &BrowserRequest,
    provider: &str,
    reason: FailureReason,
    detail: &str,
) -> Response<ProxyBody> {
    sso.metrics
        .login_failed(provider, browser.tenant_id(), reason);
    if reason == FailureReason::StoreUnavailable {
        sso.store_metrics.fallback("login", "refuse");
    }
    tracing::warn!(
        request_id = %browser.request_id,
        provider,
        tenant = browser.tenant_id().unwrap_or("-"),
        reason = reason.label(),
        detail,
        "sso: login refused"
    );
    let status = match reason {
        FailureReason::Provider | FailureReason::Handoff => StatusCode::BAD_GATEWAY,
        FailureReason::RuleRefused => StatusCode::FORBIDDEN,
        FailureReason::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let message = match reason {
        // Moodle's own message is useful to the person (e.g. "user not found").
        FailureReason::Handoff if !detail.is_empty() => {
            format!("{} ({detail})", reason.public_message())
        }
        _ => reason.public_message().to_string(),
    };
    simple_page(status, "Sign-in failed", &message, &browser.request_id)
}

/// A small page for the edge's own answers (failures, logout done), escaped and not cached.
pub(crate) fn simple_page(
    status: StatusCode,
    title: &str,
    message: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title></head>\n<body><main><h1>{t}</h1>\n<p>{m}</p>\n<p><a href=\"/auth/login\">Sign in again</a></p>\n<p><small>Request id: {rid}</small></p></main></body></html>\n",
        t = escape(title),
        m = escape(message),
        rid = escape(request_id),
    );
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
