//! The SAML paths as the SSO stage calls them: each turns a browser request into the protocol
//! step (`login`, `acs`, `slo`, `sp_metadata`) and its outcome into an answer — a redirect, the
//! hand-off through `finish_login`, or a refusal page through `login_failed`. Refusals are
//! logged with the SAML reason in the detail (`saml <reason>: ...`); no SAML message is logged.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Response, StatusCode};

use super::acs as acs_flow;
use super::acs::{AcsLogin, Refusal};
use super::attributes::SamlSubject;
use super::login;
use super::pending;
use super::slo as slo_flow;
use crate::body::{self, ProxyBody};
use crate::sso::browser::BrowserRequest;
use crate::sso::config::ProviderConfig;
use crate::sso::failure::{login_failed, simple_page, FailureReason};
use crate::sso::finish::finish_login;
use crate::sso::identity::{HandleRef, Identity, LoginStart, ProtocolHandle};
use crate::sso::session::{self, Session};
use crate::sso::SsoState;

/// Attribute names (short and OID forms) that fill the hand-off's optional profile fields.
const FIRSTNAME: &[&str] = &["givenName", "urn:oid:2.5.4.42"];
const LASTNAME: &[&str] = &["sn", "surname", "urn:oid:2.5.4.4"];
const EMAIL: &[&str] = &["mail", "email", "urn:oid:0.9.2342.19200300.100.1.3"];

fn redirect(location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Our reasons folded into the SSO metrics' reason labels.
fn failure_reason(reason: &str) -> FailureReason {
    match reason {
        "signature" => FailureReason::BadSignature,
        "replay" => FailureReason::Replay,
        "expired" => FailureReason::Expired,
        "audience" | "recipient" | "destination" => FailureReason::Audience,
        "unknown_request" | "unsolicited" | "in_response_to" | "unbound" => FailureReason::State,
        "store" => FailureReason::StoreUnavailable,
        "no_metadata" | "status" => FailureReason::Provider,
        _ => FailureReason::Protocol,
    }
}

fn refused(sso: &SsoState, browser: &BrowserRequest, r: &Refusal) -> Response<ProxyBody> {
    let provider = r.provider.as_deref().unwrap_or("saml");
    let detail = format!("saml {}: {}", r.reason, r.detail);
    login_failed(sso, browser, provider, failure_reason(r.reason), &detail)
}

/// The person chose this SAML provider on the login page: the redirect with the AuthnRequest.
pub(crate) async fn start_login(
    sso: &SsoState,
    browser: &BrowserRequest,
    provider: &ProviderConfig,
    start: LoginStart,
) -> Response<ProxyBody> {
    let Some(p) = sso.saml.provider(&provider.id) else {
        return login_failed(
            sso,
            browser,
            &provider.id,
            FailureReason::Protocol,
            "saml: not a SAML provider",
        );
    };
    match login::start(p, &sso.store, start, browser.secure).await {
        Ok((url, cookie)) => {
            let mut resp = redirect(&url);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().append(SET_COOKIE, v);
            }
            resp
        }
        Err(e) => login_failed(
            sso,
            browser,
            &provider.id,
            FailureReason::Provider,
            &format!("saml login: {e}"),
        ),
    }
}

/// GET /auth/saml/metadata[?provider=ID]: the SP metadata (the first SAML provider's when no
/// provider is named: sites usually have one SP for all their IdPs).
pub(crate) async fn metadata(sso: &SsoState, browser: &BrowserRequest) -> Response<ProxyBody> {
    let chosen = match browser.query_param("provider") {
        Some(id) => sso.saml.provider(&id),
        None => sso.saml.providers.first(),
    };
    let Some(p) = chosen else {
        return simple_page(
            StatusCode::NOT_FOUND,
            "No SAML provider",
            "No SAML provider of that name is configured.",
            &browser.request_id,
        );
    };
    let mut resp = Response::new(body::full(p.sp_metadata.clone()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    resp
}

/// POST /auth/saml/acs: verify, then hand the identity to `finish_login`.
pub(crate) async fn acs(
    sso: &SsoState,
    browser: &BrowserRequest,
    body: Bytes,
) -> Response<ProxyBody> {
    if browser.method != Method::POST {
        return simple_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Sign-in failed",
            "The sign-in answer must be POSTed.",
            &browser.request_id,
        );
    }
    let bound = |request_id: &str| {
        browser
            .cookie(&pending::binding_cookie(browser.secure, request_id))
            .map(str::to_string)
    };
    match acs_flow::consume(&sso.saml.providers, &sso.store, &body, &bound).await {
        Ok(login) => {
            tracing::info!(
                request_id = %browser.request_id,
                provider = %login.provider.id,
                user = %login.identity.user,
                "saml: assertion accepted"
            );
            let clear = login.request_id.as_ref().map(|id| {
                format!(
                    "{}=; Path=/; HttpOnly; Max-Age=0{}",
                    pending::binding_cookie(browser.secure, id),
                    if browser.secure {
                        "; Secure; SameSite=None"
                    } else {
                        ""
                    }
                )
            });
            let (start, identity) = to_identity(browser, login);
            let mut resp = finish_login(sso, browser, start, identity).await;
            if let Some(v) = clear.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().append(SET_COOKIE, v);
            }
            resp
        }
        Err(r) => refused(sso, browser, &r),
    }
}

fn first(
    attrs: &std::collections::BTreeMap<String, Vec<String>>,
    names: &[&str],
) -> Option<String> {
    names
        .iter()
        .find_map(|n| attrs.get(*n).and_then(|v| v.first()).cloned())
}

fn to_identity(browser: &BrowserRequest, login: AcsLogin) -> (LoginStart, Identity) {
    let provider = login.provider.id.clone();
    let start = login.start.unwrap_or_else(|| LoginStart {
        // IdP-initiated: the tenant is the one the ACS was reached on; RelayState is only a
        // return URL candidate, validated by finish_login like any other.
        provider: provider.clone(),
        tenant: browser.tenant_id().map(str::to_string),
        return_to: login.relay_state.unwrap_or_else(|| "/".to_string()),
    });
    let id = login.identity;
    let subject = id.subject.unwrap_or(SamlSubject {
        name_id: id.user.clone(),
        name_id_format: None,
        session_index: None,
    });
    let identity = Identity {
        provider,
        tenant: start.tenant.clone(),
        firstname: first(&id.attributes, FIRSTNAME),
        lastname: first(&id.attributes, LASTNAME),
        email: first(&id.attributes, EMAIL),
        user: id.user,
        attributes: id.attributes,
        handle: ProtocolHandle::Saml {
            name_id: subject.name_id,
            name_id_format: subject.name_id_format,
            name_qualifier: None,
            sp_name_qualifier: None,
            session_index: subject.session_index,
        },
    };
    (start, identity)
}

/// GET /auth/saml/slo: a LogoutRequest from the IdP (`SAMLRequest`) or the IdP's answer to
/// ours (`SAMLResponse`).
pub(crate) async fn slo(
    sso: &SsoState,
    browser: &BrowserRequest,
    _body: Bytes,
) -> Response<ProxyBody> {
    let query = browser.uri.query().unwrap_or("");
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    let result = if has("SAMLRequest") {
        idp_logout(sso, browser, query).await
    } else if has("SAMLResponse") {
        slo_flow::answer_from_idp(&sso.saml.providers, &sso.store, query)
            .await
            .map(|return_to| {
                tracing::info!(request_id = %browser.request_id, "saml: single logout confirmed by the IdP");
                redirect(&return_to)
            })
    } else {
        Err(Refusal {
            reason: "malformed",
            detail: "neither SAMLRequest nor SAMLResponse (only HTTP-Redirect is supported)".into(),
            provider: None,
        })
    };
    result.unwrap_or_else(|r| {
        tracing::warn!(
            request_id = %browser.request_id,
            provider = r.provider.as_deref().unwrap_or("-"),
            reason = r.reason,
            detail = %r.detail,
            "saml: logout message refused"
        );
        simple_page(
            StatusCode::BAD_REQUEST,
            "Sign-out failed",
            "The sign-out message could not be verified.",
            &browser.request_id,
        )
    })
}

async fn idp_logout(
    sso: &SsoState,
    browser: &BrowserRequest,
    query: &str,
) -> Result<Response<ProxyBody>, Refusal> {
    let logout = slo_flow::from_idp(&sso.saml.providers, &sso.store, query).await?;
    let order = &logout.order;
    let refs: Vec<HandleRef<'_>> = if order.session_indexes.is_empty() {
        vec![HandleRef::SamlNameId(&order.name_id)]
    } else {
        order
            .session_indexes
            .iter()
            .map(|si| HandleRef::SamlSession {
                name_id: &order.name_id,
                session_index: si,
            })
            .collect()
    };
    let mut ended = 0;
    for r in refs {
        ended += session::end_sessions(sso, &order.provider, r)
            .await
            .map_err(|e| Refusal {
                reason: "store",
                detail: e.to_string(),
                provider: Some(order.provider.clone()),
            })?;
    }
    tracing::info!(
        request_id = %browser.request_id,
        provider = %order.provider,
        sessions = ended,
        "saml: single logout from the IdP"
    );
    Ok(redirect(&logout.answer_url))
}

/// The edge session of a SAML login was just ended here: the redirect that carries a
/// LogoutRequest to the IdP, or None when the IdP does no single logout over HTTP-Redirect.
pub(crate) async fn logout_redirect(
    sso: &SsoState,
    browser: &BrowserRequest,
    session: &Session,
) -> Option<Response<ProxyBody>> {
    let ProtocolHandle::Saml {
        name_id,
        name_id_format,
        session_index,
        ..
    } = &session.handle
    else {
        return None;
    };
    let provider = sso.saml.provider(&session.provider)?;
    let subject = SamlSubject {
        name_id: name_id.clone(),
        name_id_format: name_id_format.clone(),
        session_index: session_index.clone(),
    };
    match slo_flow::start(provider, &sso.store, &subject, &provider.opts.after_logout).await {
        Ok(url) => url.map(|u| redirect(&u)),
        Err(r) => {
            tracing::warn!(
                request_id = %browser.request_id,
                provider = %provider.id,
                reason = r.reason,
                detail = %r.detail,
                "saml: could not start single logout"
            );
            None
        }
    }
}
