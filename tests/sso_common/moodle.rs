//! The stand-in Moodle with auth_userkey (see the harness doc).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::{StandinServer, USERKEY_TOKEN};

#[derive(Default)]
pub struct State {
    /// Users Moodle knows (the mapping field's values).
    pub users: HashSet<String>,
    /// auth_userkey's "Restrict by IP": `user[ip]` is then required.
    pub ip_restriction: bool,
    /// auth_userkey's "Create user" / "Update user": only then may the call carry
    /// firstname, lastname and email.
    pub profile_fields: bool,
    /// key -> (user, bound ip, issued)
    keys: HashMap<String, (String, Option<String>, Instant)>,
    /// MoodleSession -> (user, sesskey)
    pub sessions: HashMap<String, (String, String)>,
    /// Every auth_userkey_request_login_url call's form fields.
    pub ws_calls: Vec<HashMap<String, String>>,
    /// Every login.php success: (user, wantsurl as given).
    pub logins: Vec<(String, String)>,
    /// Back-channel logout bodies seen by the recorder, and where it forwards them.
    pub bcl_bodies: Vec<String>,
    pub bcl_target: Option<String>,
}

pub struct Moodle {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    _server: StandinServer,
}

fn counter() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}{:016x}", n, t as u64)
}

impl Moodle {
    pub fn start(users: &[&str]) -> Moodle {
        let state = Arc::new(Mutex::new(State {
            users: users.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        }));
        let st = state.clone();
        let server = StandinServer::start(1, move |req, _conn| answer(req, st.clone()));
        Moodle {
            addr: server.addr,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn session_count(&self) -> usize {
        self.with(|s| s.sessions.len())
    }
}

fn form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn reply(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(body.into())).unwrap()
}

fn cookie(req_headers: &http::HeaderMap, name: &str) -> Option<String> {
    req_headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// A small crest for the login page screenshots.
const LOGO_SVG: &str = "<svg xmlns='http://www.w3.org/2000/svg' width='64' height='72' viewBox='0 0 64 72'>\
<path d='M4 4h56v30c0 18-13 29-28 34C17 63 4 52 4 34z' fill='#1a3a6b'/>\
<path d='M10 10h44v24c0 14-10 23-22 27C20 57 10 48 10 34z' fill='none' stroke='#d9b45a' stroke-width='3'/>\
<path d='M20 26l12-8 12 8v4H20zM22 32h4v14h-4zM30 32h4v14h-4zM38 32h4v14h-4zM19 48h26v4H19z' fill='#d9b45a'/></svg>";

async fn answer(
    req: Request<Incoming>,
    st: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = form(parts.uri.query().unwrap_or("").as_bytes());
    let client_ip = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let wwwroot = format!("http://{host}");
    match path.as_str() {
        "/webservice/rest/server.php" => {
            let f = form(&body);
            let mut s = st.lock().unwrap();
            s.ws_calls.push(f.clone());
            if f.get("wstoken").map(String::as_str) != Some(USERKEY_TOKEN) {
                return Ok(reply(200, &[], json!({"exception":"moodle_exception","errorcode":"invalidtoken","message":"Invalid token - token not found"}).to_string()));
            }
            if f.get("wsfunction").map(String::as_str) != Some("auth_userkey_request_login_url") {
                return Ok(reply(200, &[], json!({"exception":"moodle_exception","errorcode":"accessexception","message":"Access control exception"}).to_string()));
            }
            // As Moodle's external API validates the plugin's parameters: an unexpected key
            // or a missing required one refuses the whole call.
            let mut allowed = vec!["user[username]"];
            if s.ip_restriction {
                allowed.push("user[ip]");
            }
            if s.profile_fields {
                allowed.extend(["user[firstname]", "user[lastname]", "user[email]"]);
            }
            let unexpected = f
                .keys()
                .any(|k| k.starts_with("user[") && !allowed.contains(&k.as_str()));
            let missing = s.ip_restriction && !f.contains_key("user[ip]");
            if unexpected || missing {
                return Ok(reply(200, &[], json!({"exception":"invalid_parameter_exception","errorcode":"invalidparameter","message":"Invalid parameter value detected"}).to_string()));
            }
            let user = f.get("user[username]").cloned().unwrap_or_default();
            if !s.users.contains(&user) {
                return Ok(reply(200, &[], json!({"exception":"invalid_parameter_exception","errorcode":"invalidparameter","message":"User is not exist"}).to_string()));
            }
            let ip = s
                .ip_restriction
                .then(|| f.get("user[ip]").cloned().unwrap_or_default());
            let key = counter();
            s.keys.insert(key.clone(), (user, ip, Instant::now()));
            Ok(reply(
                200,
                &[],
                json!({ "loginurl": format!("{wwwroot}/auth/userkey/login.php?key={key}") })
                    .to_string(),
            ))
        }
        "/auth/userkey/login.php" => {
            let mut s = st.lock().unwrap();
            let key = query.get("key").cloned().unwrap_or_default();
            // One-time: taken out whatever happens next.
            let Some((user, ip, issued)) = s.keys.remove(&key) else {
                return Ok(reply(200, &[], "Incorrect key"));
            };
            if issued.elapsed() > Duration::from_secs(60) {
                return Ok(reply(200, &[], "Expired key"));
            }
            if let Some(ip) = ip {
                if ip != client_ip {
                    return Ok(reply(200, &[], "Client IP address mismatch"));
                }
            }
            let sid = counter();
            let sesskey = counter()[..10].to_string();
            s.sessions.insert(sid.clone(), (user.clone(), sesskey));
            let wants = query
                .get("wantsurl")
                .cloned()
                .unwrap_or_else(|| format!("{wwwroot}/"));
            s.logins.push((user, wants.clone()));
            // Unchecked, as the plugin does.
            Ok(reply(
                303,
                &[
                    ("location", wants),
                    (
                        "set-cookie",
                        format!("MoodleSession={sid}; path=/; HttpOnly"),
                    ),
                ],
                "",
            ))
        }
        "/login/logout.php" => {
            let mut s = st.lock().unwrap();
            let sid = cookie(&parts.headers, "MoodleSession").unwrap_or_default();
            let Some((_, sesskey)) = s.sessions.get(&sid).cloned() else {
                return Ok(reply(303, &[("location", format!("{wwwroot}/"))], ""));
            };
            if query.get("sesskey") == Some(&sesskey) {
                s.sessions.remove(&sid);
                return Ok(reply(
                    303,
                    &[
                        ("location", format!("{wwwroot}/")),
                        ("set-cookie", "MoodleSession=; path=/; Max-Age=0".into()),
                    ],
                    "",
                ));
            }
            Ok(reply(200, &[("content-type", "text/html".into())], format!(
                "<p>Do you really want to log out?</p><form method=\"post\" action=\"{wwwroot}/login/logout.php\"><input type=\"hidden\" name=\"sesskey\" value=\"{sesskey}\"><button>Continue</button></form>"
            )))
        }
        "/record-bcl" => {
            let (target, text) = {
                let mut s = st.lock().unwrap();
                let text = String::from_utf8_lossy(&body).to_string();
                s.bcl_bodies.push(text.clone());
                (s.bcl_target.clone(), text)
            };
            let Some(target) = target else {
                return Ok(reply(500, &[], "no target"));
            };
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(target)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(text)
                .send()
                .await;
            let status = r.map(|r| r.status().as_u16()).unwrap_or(502);
            Ok(reply(status, &[], ""))
        }
        "/login/index.php" => Ok(reply(200, &[], "Moodle's own login form")),
        // A theme logo, as a site serves its own (the login page's `logo_url`).
        p if p.starts_with("/theme/") && p.ends_with(".svg") => Ok(reply(
            200,
            &[("content-type", "image/svg+xml".to_string())],
            LOGO_SVG,
        )),
        _ => {
            let s = st.lock().unwrap();
            let sid = cookie(&parts.headers, "MoodleSession").unwrap_or_default();
            match s.sessions.get(&sid) {
                Some((user, _)) => Ok(reply(
                    200,
                    &[],
                    format!("Logged in as {user} at {}", parts.uri),
                )),
                None => Ok(reply(
                    303,
                    &[("location", format!("{wwwroot}/login/index.php"))],
                    "",
                )),
            }
        }
    }
}
