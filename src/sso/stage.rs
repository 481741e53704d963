//! The SSO stage (`SsoStage`, the pipeline's authenticate stage, at the end of this file): which
//! handler answers an SSO path, and the check every other request
//! with an edge session cookie gets.
//!
//! Order: `browser_request` (tenant by host/path, or a `tenant` parameter on this host) ->
//! for SSO paths `answer` dispatches to the login page, a protocol or logout; for every other
//! path `check_session` costs one cookie scan when there is no edge cookie, and one store
//! lookup when there is one.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, HOST, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};

use crate::body::{self, ProxyBody};
use crate::context::RequestContext;
use crate::route::{Route, SsoRoute};
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;
use crate::store::config::SessionCheckPolicy;

use super::browser::BrowserRequest;
use super::failure::simple_page;
use super::login_page::{self, LoginOutcome};
use super::logout::clearing_cookies;
use super::return_watch::ReturnWatch;
use super::session::cookie_session_alive;
use super::{logout, oauth2, oidc, saml, SsoState};

/// The largest POST body an SSO path reads (a SAML Response with an encrypted assertion fits).
pub(crate) const MAX_FORM: usize = 512 * 1024;

/// What the stage knows about the request, whoever calls it.
pub(crate) struct RequestFacts<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    /// The browser reached the edge over TLS (or a trusted proxy said so).
    pub secure: bool,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// The Host as sent, lower-cased (with port) and without port.
fn host_of(facts: &RequestFacts<'_>) -> (String, String) {
    let authority = facts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| facts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
        None => authority.split(':').next().unwrap_or_default().to_string(),
    };
    (authority, host)
}

pub(crate) fn browser_request(sso: &SsoState, facts: &RequestFacts<'_>) -> BrowserRequest {
    let (authority, host) = host_of(facts);
    let mut b = BrowserRequest {
        request_id: facts.request_id.to_string(),
        client_ip: facts.client_ip,
        secure: facts.secure,
        host,
        authority,
        method: facts.method.clone(),
        uri: facts.uri.clone(),
        headers: facts.headers.clone(),
        tenant: None,
    };
    b.tenant = sso.tenants.resolve(&b.host, facts.uri.path()).or_else(|| {
        b.query_param("tenant")
            .and_then(|t| sso.tenants.by_id_on_host(&t, &b.host))
    });
    b
}

/// Answers a request on an SSO path; None when it goes on to Moodle (the local-account bypass
/// on an intercepted login page). `body` is the request body read up to `MAX_FORM`.
pub(crate) async fn answer(
    sso: &SsoState,
    route: SsoRoute,
    facts: &RequestFacts<'_>,
    body: Bytes,
) -> Option<Response<ProxyBody>> {
    let browser = browser_request(sso, facts);
    let post_only = |b: &BrowserRequest| b.method != Method::POST;
    let resp = match route {
        SsoRoute::Login | SsoRoute::Intercepted => {
            match login_page::handle(sso, &browser, route).await {
                LoginOutcome::Answer(r) => r,
                LoginOutcome::ToMoodle => return None,
            }
        }
        SsoRoute::OidcCallback => oidc::flow::callback(sso, &browser).await,
        SsoRoute::OAuth2Callback => oauth2::flow::callback(sso, &browser).await,
        SsoRoute::BackchannelLogout if post_only(&browser) => not_allowed(&browser),
        SsoRoute::BackchannelLogout => oidc::backchannel::handle(sso, &browser, body).await,
        SsoRoute::SamlMetadata => saml::metadata(sso, &browser).await,
        SsoRoute::SamlAcs if post_only(&browser) => not_allowed(&browser),
        SsoRoute::SamlAcs => saml::acs(sso, &browser, body).await,
        SsoRoute::SamlSlo => saml::slo(sso, &browser, body).await,
        SsoRoute::Logout => logout::handle(sso, &browser, &body).await,
    };
    Some(resp)
}

fn not_allowed(b: &BrowserRequest) -> Response<ProxyBody> {
    simple_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This address takes POST.",
        &b.request_id,
    )
}

/// For a request going to Moodle: None when it may go on. A browser whose edge session has
/// ended (logout elsewhere, back-channel logout, idle or absolute lifetime) is sent back to the
/// same address with both the edge and the Moodle session cookies removed, so its Moodle
/// session ends with the edge session. No edge cookie: one header scan, nothing else.
pub(crate) async fn check_session(
    sso: &SsoState,
    facts: &RequestFacts<'_>,
) -> Option<Response<ProxyBody>> {
    let alive = match cookie_session_alive(&sso.sessions, facts.headers, facts.secure).await? {
        Ok(alive) => alive,
        // The session is in no cache here and the store failed: `store.on_error.session_check`.
        Err(e) => match sso.store_policy.session_check {
            // A store outage must not log everyone out: Moodle's own session still applies.
            SessionCheckPolicy::Pass => {
                tracing::warn!(request_id = facts.request_id, error = %e, "sso: session check failed; passed on");
                sso.store_metrics.fallback("session_check", "pass");
                true
            }
            SessionCheckPolicy::Refuse => {
                tracing::warn!(request_id = facts.request_id, error = %e, "sso: session check failed; refused");
                sso.store_metrics.fallback("session_check", "refuse");
                return Some(simple_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in unavailable",
                    "Your sign-in cannot be checked for a moment. Please try again in a few minutes.",
                    facts.request_id,
                ));
            }
        },
    };
    if alive {
        return None;
    }
    let mut resp = Response::new(body::empty());
    // 307 keeps the method, so a POST is not silently turned into a GET.
    *resp.status_mut() = if facts.method == Method::GET || facts.method == Method::HEAD {
        StatusCode::SEE_OTHER
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let h = resp.headers_mut();
    let target = facts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Ok(v) = HeaderValue::from_str(target) {
        h.insert(LOCATION, v);
    }
    for c in clearing_cookies(sso, facts.secure) {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(SET_COOKIE, v);
        }
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}

/// The authenticate stage: answers SSO paths; on every other request, ends the Moodle session
/// of a browser whose edge session has ended (one cookie scan when there is no edge cookie).
pub(crate) struct SsoStage;

impl Stage for SsoStage {
    const NAME: &'static str = "authenticate";

    async fn run(state: &Arc<State>, ctx: &mut RequestContext, req: &mut StageRequest) -> Flow {
        let Some(sso) = state.sso.as_deref() else {
            return Flow::Next;
        };
        let (answer, note) = {
            let facts = RequestFacts {
                request_id: ctx.request_id.as_str(),
                client_ip: ctx.client_ip,
                secure: ctx.conn.tls,
                method: &req.parts.method,
                uri: &req.parts.uri,
                headers: &req.parts.headers,
            };
            match ctx.route {
                Route::Sso(route) => {
                    let body = if req.body.is_end_stream() {
                        Ok(Bytes::new())
                    } else {
                        match req.body.peek(MAX_FORM).await {
                            Ok(b) => Ok(b.clone()),
                            Err(_) => Err(()),
                        }
                    };
                    match body {
                        Ok(b) if req.body.is_end_stream() || req.body.complete() => {
                            (Box::pin(answer(sso, route, &facts, b)).await, "sso")
                        }
                        _ => (
                            Some(simple_page(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "Request too large",
                                "The sign-in request was too large or could not be read.",
                                facts.request_id,
                            )),
                            "sso_body",
                        ),
                    }
                }
                _ => (check_session(sso, &facts).await, "sso_session_ended"),
            }
        };
        if answer.is_none() && ctx.route == Route::Page && req.parts.method == Method::GET {
            let wanted = req.parts.uri.path_and_query();
            if let (Some(wanted), Some(sso)) = (wanted, state.sso.as_ref()) {
                if ReturnWatch::wanted_for(req.parts.uri.path()) {
                    ctx.watch(Box::new(ReturnWatch::new(wanted.clone(), sso.clone())));
                }
            }
        }
        match answer {
            Some(resp) => {
                ctx.note = Some(note);
                Flow::Answer(resp)
            }
            None => Flow::Next,
        }
    }
}
