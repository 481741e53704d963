//! GET /auth/login (and the intercepted Moodle login page): the per-tenant page listing the
//! providers available there, or, with `provider=ID`, the start of that provider's login.
//!
//! Order: local-account bypass -> provider chosen? start it -> a live session for this tenant?
//! hand off again (Moodle's session ended, the edge's did not) -> render the page. The page is
//! a plain GET form (no JavaScript), every value escaped, labels in the chosen language.

use std::collections::BTreeSet;

use http::header::{ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, Method, Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::route::SsoRoute;

use super::browser::BrowserRequest;
use super::config::{PageConfig, ProviderConfig, ProviderKind};
use super::failure::simple_page;
use super::finish::finish_login;
use super::html::escape;
use super::identity::{Identity, LoginStart};
use super::language::{choose, words};
use super::page_look::Look;
use super::session::{self, Session};
use super::tenant::provider_available;
use super::{oauth2, oidc, return_url, saml, SsoState};

/// Remembers the provider last chosen on this browser (not a secret: a provider id).
pub(crate) const LAST_PROVIDER_COOKIE: &str = "moodle-edge-sso-last";

/// What the login route decided: answer here, or let Moodle's own login page serve it.
pub(crate) enum LoginOutcome {
    Answer(Response<ProxyBody>),
    ToMoodle,
}

/// Whether the local-account bypass is open on this request's tenant.
fn local_login_allowed(sso: &SsoState, browser: &BrowserRequest) -> bool {
    let site = &sso.config.local_login;
    if site.force {
        return site.enabled;
    }
    browser
        .tenant
        .as_ref()
        .and_then(|t| t.config.local_login)
        .unwrap_or(site.enabled)
}

/// The return URL the person asked for, validated (wwwroot's front page otherwise).
fn return_to(sso: &SsoState, browser: &BrowserRequest) -> String {
    ["wantsurl", "return"]
        .iter()
        .filter_map(|p| browser.query_param(p))
        .find_map(|raw| return_url::validate(&sso.wwwroot, &raw))
        .unwrap_or_else(|| format!("{}/", sso.wwwroot.path))
}

pub(crate) async fn handle(
    sso: &SsoState,
    browser: &BrowserRequest,
    route: SsoRoute,
) -> LoginOutcome {
    if route == SsoRoute::Intercepted {
        // Moodle's own form (GET with local=1, or its POST of username/password).
        let wants_local =
            browser.method == Method::POST || browser.query_param("local").as_deref() == Some("1");
        if wants_local {
            return if local_login_allowed(sso, browser) {
                LoginOutcome::ToMoodle
            } else {
                LoginOutcome::Answer(simple_page(
                    StatusCode::FORBIDDEN,
                    "Local sign-in is off",
                    "Local accounts cannot sign in here. Please use your organisation's sign-in.",
                    &browser.request_id,
                ))
            };
        }
    }
    if browser.method != Method::GET && browser.method != Method::HEAD {
        return LoginOutcome::Answer(simple_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "The sign-in page is reached with GET.",
            &browser.request_id,
        ));
    }
    let tenant = browser.tenant_id().map(str::to_string);
    let return_to = return_to(sso, browser);
    if let Some(chosen) = browser.query_param("provider") {
        let Some(p) = sso
            .config
            .providers
            .iter()
            .find(|p| p.id == chosen && provider_available(p, tenant.as_deref()))
        else {
            return LoginOutcome::Answer(simple_page(
                StatusCode::NOT_FOUND,
                "Unknown sign-in option",
                "That sign-in option is not offered here.",
                &browser.request_id,
            ));
        };
        let start = LoginStart {
            provider: p.id.clone(),
            tenant,
            return_to,
        };
        let mut resp = match p.kind {
            ProviderKind::Oidc => match sso.oidc.get(&p.id) {
                Some(op) => oidc::flow::start(sso, browser, op, start).await,
                None => simple_page(
                    StatusCode::NOT_FOUND,
                    "Unknown",
                    "No such provider.",
                    &browser.request_id,
                ),
            },
            ProviderKind::Saml => saml::start_login(sso, browser, p, start).await,
            ProviderKind::OAuth2 => match sso.oauth2.get(&p.id) {
                Some(op) => oauth2::flow::start(sso, browser, op, start).await,
                None => simple_page(
                    StatusCode::NOT_FOUND,
                    "Unknown",
                    "No such provider.",
                    &browser.request_id,
                ),
            },
        };
        let remember = format!(
            "{LAST_PROVIDER_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000{}",
            p.id,
            if browser.secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&remember) {
            resp.headers_mut().append(SET_COOKIE, v);
        }
        return LoginOutcome::Answer(resp);
    }
    if browser.query_param("logged_out").is_none() {
        if let Some(current) = session::current(sso, browser).await {
            // Signed in at the edge but not (any more) in Moodle: a fresh hand-off, no
            // provider round trip.
            let start = LoginStart {
                provider: current.session.provider.clone(),
                tenant: current.session.tenant.clone(),
                return_to,
            };
            return LoginOutcome::Answer(
                finish_login(sso, browser, start, identity_of(&current.session)).await,
            );
        }
    }
    LoginOutcome::Answer(render(sso, browser, &return_to))
}

fn identity_of(s: &Session) -> Identity {
    Identity {
        provider: s.provider.clone(),
        tenant: s.tenant.clone(),
        user: s.user.clone(),
        firstname: s.firstname.clone(),
        lastname: s.lastname.clone(),
        email: s.email.clone(),
        attributes: Default::default(),
        handle: s.handle.clone(),
    }
}

fn label_in<'a>(
    map: &'a std::collections::BTreeMap<String, String>,
    lang: &str,
) -> Option<&'a str> {
    map.get(lang)
        .or_else(|| map.get("en"))
        .or_else(|| map.values().next())
        .map(String::as_str)
}

fn render(sso: &SsoState, browser: &BrowserRequest, return_to: &str) -> Response<ProxyBody> {
    let tenant_id = browser.tenant_id();
    let providers: Vec<&ProviderConfig> = sso
        .config
        .providers
        .iter()
        .filter(|p| provider_available(p, tenant_id))
        .collect();
    let site = &sso.config.page;
    let own: Option<&PageConfig> = browser.tenant.as_ref().map(|t| &t.config.page);
    let mut known: BTreeSet<String> = BTreeSet::new();
    for p in &providers {
        known.extend(p.label.keys().cloned());
    }
    known.extend(site.name.keys().cloned());
    if let Some(o) = own {
        known.extend(o.name.keys().cloned());
    }
    let known: Vec<String> = known.into_iter().collect();
    let accept = browser
        .headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let lang = choose(browser.query_param("lang").as_deref(), accept, &known);
    let w = words(&lang);
    let name = own
        .and_then(|o| label_in(&o.name, &lang))
        .or_else(|| label_in(&site.name, &lang))
        .unwrap_or(w.sign_in);
    let look = Look::resolve(site, own);
    let logo = own
        .and_then(|o| o.logo_url.as_ref())
        .or(site.logo_url.as_ref());
    let last = browser.cookie(LAST_PROVIDER_COOKIE);
    // The last provider used comes first, so it is the first in the focus order too.
    let mut ordered = providers.clone();
    ordered.sort_by_key(|p| Some(p.id.as_str()) != last);

    let mut html = String::with_capacity(8192);
    html.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} - {name}</title><style>{style}</style></head>\n<body>\n<header><div class=\"bar\">",
        lang = escape(&lang),
        title = escape(w.sign_in),
        name = escape(name),
        style = look.style_sheet(),
    ));
    if let Some(logo) = logo {
        // The name follows as text, so the logo is decoration for screen readers.
        html.push_str(&format!("<img src=\"{}\" alt=\"\">", escape(logo)));
    }
    html.push_str(&format!(
        "<h1>{}</h1></div></header>\n<main>\n",
        escape(name)
    ));
    if browser.query_param("logged_out").is_some() {
        html.push_str(&format!(
            "<p class=\"note\" role=\"status\">{}</p>\n",
            escape(w.signed_out)
        ));
    }
    html.push_str(&format!(
        "<form method=\"get\" action=\"/auth/login\" aria-labelledby=\"choose\">\n<h2 id=\"choose\">{}</h2>\n\
<input type=\"hidden\" name=\"return\" value=\"{}\">\n",
        escape(w.choose),
        escape(return_to)
    ));
    if let Some(t) = browser
        .query_param("tenant")
        .filter(|_| browser.tenant.is_some())
    {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"tenant\" value=\"{}\">\n",
            escape(&t)
        ));
    }
    html.push_str("<ul>\n");
    for p in &ordered {
        let label = label_in(&p.label, &lang).unwrap_or(&p.id);
        let mark = if Some(p.id.as_str()) == last {
            format!(" <span class=\"last\">{}</span>", escape(w.last_used))
        } else {
            String::new()
        };
        html.push_str(&format!(
            "<li><button class=\"provider\" type=\"submit\" name=\"provider\" value=\"{}\"><span>{}</span>{}</button></li>\n",
            escape(&p.id),
            escape(label),
            mark
        ));
    }
    html.push_str("</ul>\n</form>\n");
    let selectable: Vec<_> = sso
        .tenants
        .all()
        .iter()
        .filter(|t| t.hosts.is_empty() && t.path_prefix.is_none())
        .collect();
    if !selectable.is_empty() {
        html.push_str(&format!(
            "<form class=\"tenant\" method=\"get\" action=\"/auth/login\"><label for=\"tenant\">{}</label>\
<select id=\"tenant\" name=\"tenant\">",
            escape(w.tenant)
        ));
        for t in selectable {
            let tname = label_in(&t.config.page.name, &lang).unwrap_or(&t.id);
            let sel = if Some(t.id.as_str()) == tenant_id {
                " selected"
            } else {
                ""
            };
            html.push_str(&format!(
                "<option value=\"{}\"{sel}>{}</option>",
                escape(&t.id),
                escape(tname)
            ));
        }
        html.push_str(&format!(
            "</select><input type=\"hidden\" name=\"return\" value=\"{}\"><button class=\"secondary\" type=\"submit\">{}</button></form>\n",
            escape(return_to),
            escape(w.go)
        ));
    }
    if local_login_allowed(sso, browser) {
        html.push_str(&format!(
            "<p class=\"local\"><a href=\"{}/login/index.php?local=1\">{}</a></p>\n",
            escape(&sso.wwwroot.path),
            escape(w.local)
        ));
    }
    html.push_str("</main>\n</body></html>\n");
    let mut resp = Response::new(body::full(html));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; frame-ancestors 'none'"),
    );
    resp
}
