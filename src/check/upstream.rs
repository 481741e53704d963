//! Does the upstream answer as Moodle, and which Moodle: its login page (the version from the
//! Moodle Docs link in its footer), and `core_webservice_get_site_info` when a web-service
//! token is configured (the release string). The token is sent in a POST body, never in a URL
//! a web server would log, and never printed.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use http::Uri;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::client::{self, CheckClient};
use super::{Line, Verdict};
use crate::config::Config;

/// How much of an answer is read: a login page is well under this.
const MAX_BODY: usize = 2 << 20;

/// What the upstream checks share: the config and a client to the upstream.
struct Site<'a> {
    config: &'a Config,
    client: CheckClient,
}

impl Site<'_> {
    fn uri(&self, path_and_query: &str) -> Result<Uri, String> {
        format!(
            "{}{path_and_query}",
            self.config.upstream.url.trim_end_matches('/')
        )
        .parse()
        .map_err(|e| format!("bad upstream URL: {e}"))
    }
}

pub(super) async fn check(config: &Config) -> Vec<Line> {
    let client = match client::build(&config.upstream) {
        Ok(c) => c,
        Err(e) => {
            return vec![Line::new(
                Verdict::Fail,
                format!("upstream {}", config.upstream.url),
                format!("cannot build a client: {e}"),
            )]
        }
    };
    let site = Site { config, client };
    let mut lines = vec![login_page(&site).await];
    if let Some(line) = site_info(&site).await {
        lines.push(line);
    }
    lines
}

fn wait(site: &Site<'_>) -> Duration {
    // Long enough for a cold Moodle to render its first page, short enough to finish.
    site.config
        .upstream
        .response_timeout
        .get()
        .min(Duration::from_secs(30))
}

/// `Host` as a browser would send it for wwwroot (Moodle checks it against wwwroot).
fn host(site: &Site<'_>) -> Option<HeaderValue> {
    let url = url::Url::parse(&site.config.moodle.wwwroot).ok()?;
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str()?),
        None => url.host_str()?.to_string(),
    };
    HeaderValue::from_str(&host).ok()
}

async fn send(
    site: &Site<'_>,
    mut req: Request<Full<Bytes>>,
) -> Result<(Response<()>, Bytes), String> {
    if let Some(h) = host(site) {
        req.headers_mut().insert(HOST, h);
    }
    req.headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static("moodle-edge-check"));
    let exchange = async {
        let resp: Response<Incoming> = site.client.request(req).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        })?;
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("the answer broke off: {e}"))?;
        Ok((Response::from_parts(parts, ()), bytes))
    };
    tokio::time::timeout(wait(site), exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", wait(site)))?
}

async fn login_page(site: &Site<'_>) -> Line {
    let what = format!("upstream {}", site.config.upstream.url);
    let uri = match site.uri("/login/index.php") {
        Ok(u) => u,
        Err(e) => return Line::new(Verdict::Fail, what, e),
    };
    let req = Request::get(uri).body(Full::default()).unwrap_or_default();
    let (resp, body) = match send(site, req).await {
        Ok(r) => r,
        Err(e) => {
            return Line::new(
                Verdict::Fail,
                what,
                format!("GET /login/index.php failed: {e}"),
            )
        }
    };
    let status = resp.status();
    if status.is_server_error() {
        return Line::new(
            Verdict::Fail,
            what,
            format!("GET /login/index.php answered {status}"),
        );
    }
    if status.is_redirection() {
        let to = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return Line::new(
            Verdict::Warn,
            what,
            format!(
                "GET /login/index.php answered {status} to {to}: behind TLS at the edge Moodle \
                 wants $CFG->sslproxy = true, and wwwroot must be the public URL"
            ),
        );
    }
    let page = String::from_utf8_lossy(&body);
    if !looks_like_moodle(&page) {
        return Line::new(
            Verdict::Warn,
            what,
            format!("GET /login/index.php answered {status}, but not with a Moodle login page"),
        );
    }
    let version = docs_version(&page)
        .map(|v| format!(", Moodle {v} (from its Moodle Docs link)"))
        .unwrap_or_else(|| ", Moodle (version not shown on the login page)".to_string());
    Line::new(
        Verdict::Ok,
        what,
        format!("GET /login/index.php answered {status}{version}"),
    )
}

fn looks_like_moodle(page: &str) -> bool {
    page.contains("logintoken") || page.contains("M.cfg") || page.contains("moodle")
}

/// "4.5" from a `docs.moodle.org/405/` link (Moodle writes its branch number there: 311 is
/// 3.11, 405 is 4.5, 500 is 5.0).
pub(super) fn docs_version(page: &str) -> Option<String> {
    let (_, rest) = page.split_once("docs.moodle.org/")?;
    let branch: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !(2..=4).contains(&branch.len()) {
        return None;
    }
    let (major, minor) = branch.split_at(1);
    let minor: u32 = minor.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

/// The web-service token the config names, if any (today: the auth_userkey hand-off's).
fn configured_token(config: &Config) -> Option<(String, std::path::PathBuf)> {
    let sso = config.sso.as_ref()?;
    // Without a file the token comes from the environment; `check --online` reads files only.
    let path = sso.moodle_handoff.token_file.clone()?;
    Some(("sso.moodle_handoff.token_file".to_string(), path))
}

async fn site_info(site: &Site<'_>) -> Option<Line> {
    let (key, path) = configured_token(site.config)?;
    let what = "moodle site info".to_string();
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            return Some(Line::new(
                Verdict::Fail,
                what,
                format!("{key}: cannot read {}: {e}", path.display()),
            ))
        }
    };
    let uri = site
        .uri("/webservice/rest/server.php?moodlewsrestformat=json")
        .ok()?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("wstoken", &token)
        .append_pair("wsfunction", "core_webservice_get_site_info")
        .finish();
    let req = Request::post(uri)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap_or_default();
    let line = match send(site, req).await {
        Err(e) => Line::new(
            Verdict::Fail,
            what,
            format!("core_webservice_get_site_info failed: {e}"),
        ),
        Ok((resp, body)) => site_info_line(what, resp.status(), &body, &key),
    };
    Some(line)
}

fn site_info_line(what: String, status: http::StatusCode, body: &[u8], key: &str) -> Line {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Line::new(
                Verdict::Fail,
                what,
                format!("core_webservice_get_site_info answered {status} without JSON"),
            )
        }
    };
    if let Some(code) = v.get("errorcode").and_then(|c| c.as_str()) {
        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
        return Line::new(
            Verdict::Fail,
            what,
            format!("the token in {key} was refused: {code}: {message}"),
        );
    }
    match v.get("release").and_then(|r| r.as_str()) {
        Some(release) => {
            let site = v.get("sitename").and_then(|s| s.as_str()).unwrap_or("");
            Line::new(
                Verdict::Ok,
                what,
                format!("Moodle {release}, site {site:?} (core_webservice_get_site_info with the token in {key})"),
            )
        }
        None => Line::new(
            Verdict::Fail,
            what,
            format!("core_webservice_get_site_info answered {status} without a release"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_link_gives_the_branch() {
        let page = r#"<a href="https://docs.moodle.org/405/en/login/index">Help</a>"#;
        assert_eq!(docs_version(page).as_deref(), Some("4.5"));
        assert_eq!(
            docs_version("https://docs.moodle.org/311/en/x").as_deref(),
            Some("3.11")
        );
        assert_eq!(
            docs_version("https://docs.moodle.org/500/en/x").as_deref(),
            Some("5.0")
        );
        assert_eq!(docs_version("https://docs.moodle.org/en/x"), None);
        assert_eq!(docs_version("no link"), None);
    }

    #[test]
    fn a_refused_token_fails_without_printing_it() {
        let body = br#"{"exception":"moodle_exception","errorcode":"invalidtoken","message":"Invalid token - token not found"}"#;
        let line = site_info_line("x".into(), http::StatusCode::OK, body, "k");
        assert_eq!(line.verdict, Verdict::Fail);
        assert!(line.detail.contains("invalidtoken"), "{line}");
    }
}
