//! The hand-off into Moodle through the auth_userkey plugin: ask Moodle's web service for a
//! one-time login URL for the mapped user, then send the browser there with `wantsurl` set to
//! the validated return path.
//!
//! Steps: `request_login_url` (POST auth_userkey_request_login_url with the web-service token,
//! `user[<mapping_field>]`, optional `user[ip]` and profile fields) -> check the answer is a
//! login URL on wwwroot -> `login_redirect` appends `wantsurl`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, Uri};
use serde::Deserialize;
use thiserror::Error;

use super::config::{MappingField, MoodleHandoffConfig};
use super::outbound::{HttpClient, HttpError};
use super::return_url::Wwwroot;

/// The environment variable read when `sso.moodle_handoff.token_file` is not set.
pub(crate) const TOKEN_ENV: &str = "MOODLE_EDGE_USERKEY_TOKEN";

#[derive(Debug, Error)]
pub(crate) enum HandoffError {
    #[error("cannot reach Moodle's web service: {0}")]
    Http(#[from] HttpError),
    #[error("Moodle answered HTTP {0}")]
    Status(u16),
    /// Moodle's own message (unknown user, web service off, function not allowed ...).
    #[error("{message} [{errorcode}]")]
    Moodle { errorcode: String, message: String },
    #[error("Moodle's answer was not understood: {0}")]
    Answer(String),
}

#[derive(Debug, Error)]
pub enum HandoffConfigError {
    #[error("sso.moodle_handoff.token_file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("sso.moodle_handoff.token_file is not set and {TOKEN_ENV} is empty")]
    NoToken,
    #[error("upstream.url: {0}")]
    Upstream(String),
}

/// What the hand-off sends about the person.
pub(crate) struct HandoffUser<'a> {
    pub user: &'a str,
    pub firstname: Option<&'a str>,
    pub lastname: Option<&'a str>,
    pub email: Option<&'a str>,
    /// The browser's address, sent as `user[ip]` when `send_client_ip` is on.
    pub ip: std::net::IpAddr,
}

/// The hand-off, built once from config.
pub(crate) struct Handoff {
    /// Moodle's REST endpoint on the upstream.
    endpoint: Uri,
    /// Moodle's logout page on the upstream (ending Moodle's session at an edge logout).
    logout_endpoint: String,
    /// wwwroot's host: Moodle checks Host against wwwroot on every request.
    host: String,
    /// The web-service token of the auth_userkey service. Never logged.
    token: String,
    mapping_field: MappingField,
    /// The plugin's "Restrict by IP": it then requires `user[ip]`.
    send_client_ip: bool,
    /// The plugin's "Create user" / "Update user": it refuses profile fields otherwise.
    send_profile: bool,
    wwwroot: Wwwroot,
}

#[derive(Deserialize)]
struct LoginUrlAnswer {
    loginurl: String,
}

#[derive(Deserialize)]
struct MoodleException {
    errorcode: Option<String>,
    message: Option<String>,
}

impl Handoff {
    pub(crate) fn build(
        cfg: &MoodleHandoffConfig,
        upstream_url: &str,
        wwwroot: &Wwwroot,
    ) -> Result<Handoff, HandoffConfigError> {
        let token = match &cfg.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| HandoffConfigError::TokenFile {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string(),
            None => std::env::var(TOKEN_ENV)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if token.is_empty() {
            return Err(HandoffConfigError::NoToken);
        }
        let base = upstream_url.trim_end_matches('/');
        let endpoint: Uri = format!("{base}{}/webservice/rest/server.php", wwwroot.path)
            .parse()
            .map_err(|e| HandoffConfigError::Upstream(format!("{upstream_url:?}: {e}")))?;
        Ok(Handoff {
            endpoint,
            logout_endpoint: format!("{base}{}/login/logout.php", wwwroot.path),
            host: wwwroot.url.host_str().unwrap_or_default().to_string()
                + &wwwroot
                    .url
                    .port()
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default(),
            token,
            mapping_field: cfg.mapping_field,
            send_client_ip: cfg.send_client_ip,
            send_profile: cfg.send_profile,
            wwwroot: wwwroot.clone(),
        })
    }

    /// Asks Moodle for a one-time login URL for this user.
    pub(crate) async fn request_login_url(
        &self,
        client: &HttpClient,
        who: &HandoffUser<'_>,
    ) -> Result<String, HandoffError> {
        let field = match self.mapping_field {
            MappingField::Username => "username",
            MappingField::Email => "email",
            MappingField::Idnumber => "idnumber",
        };
        // Built in a block: the serializer is not Send and must not live across an await.
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("wstoken", &self.token)
                .append_pair("wsfunction", "auth_userkey_request_login_url")
                .append_pair("moodlewsrestformat", "json")
                .append_pair(&format!("user[{field}]"), who.user);
            if self.send_client_ip {
                form.append_pair("user[ip]", &who.ip.to_string());
            }
            let profile = [
                ("firstname", who.firstname),
                ("lastname", who.lastname),
                ("email", who.email),
            ];
            for (name, value) in profile.into_iter().filter(|_| self.send_profile) {
                if let Some(v) = value.filter(|_| name != field) {
                    form.append_pair(&format!("user[{name}]"), v);
                }
            }
            form.finish()
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(form))
            .map_err(|e| HandoffError::Answer(e.to_string()))?;
        let resp = client.send(req).await?;
        if !resp.status().is_success() {
            return Err(HandoffError::Status(resp.status().as_u16()));
        }
        let body = resp.body();
        if let Ok(ok) = serde_json::from_slice::<LoginUrlAnswer>(body) {
            return self.check_login_url(ok.loginurl);
        }
        match serde_json::from_slice::<MoodleException>(body) {
            Ok(e) if e.errorcode.is_some() || e.message.is_some() => Err(HandoffError::Moodle {
                errorcode: e.errorcode.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
            }),
            _ => Err(HandoffError::Answer(format!(
                "{} bytes, neither loginurl nor an exception",
                body.len()
            ))),
        }
    }

    /// The login URL must be auth_userkey's on wwwroot: the edge redirects browsers to it.
    fn check_login_url(&self, url: String) -> Result<String, HandoffError> {
        let expected = format!("{}/auth/userkey/login.php?", self.wwwroot.prefix);
        if url.starts_with(&expected) && !url.contains('#') {
            Ok(url)
        } else {
            Err(HandoffError::Answer(
                "loginurl is not auth_userkey's on wwwroot".into(),
            ))
        }
    }

    /// The browser's next stop: the login URL with `wantsurl` = the validated return path.
    pub(crate) fn login_redirect(&self, login_url: &str, return_path: &str) -> String {
        let wants = self.wwwroot.absolute(return_path);
        let enc: String = url::form_urlencoded::byte_serialize(wants.as_bytes()).collect();
        format!("{login_url}&wantsurl={enc}")
    }

    /// Ends the browser's Moodle session the way Moodle's own logout link does: Moodle's
    /// logout page, asked with the browser's session cookie, shows a form carrying the
    /// session's sesskey; the same page with that sesskey ends the session. Best effort: the
    /// browser's cookie is removed too, whatever Moodle says.
    pub(crate) async fn end_moodle_session(&self, client: &HttpClient, cookie: &str) -> bool {
        let get = |uri: String| {
            Request::builder()
                .method(Method::GET)
                .uri(uri)
                .header(HOST, &self.host)
                .header(http::header::COOKIE, cookie)
                .body(Bytes::new())
        };
        let Ok(req) = get(self.logout_endpoint.clone()) else {
            return false;
        };
        let Ok(page) = client.send(req).await else {
            return false;
        };
        let Some(sesskey) = find_sesskey(page.body()) else {
            return false;
        };
        let Ok(req) = get(format!("{}?sesskey={sesskey}", self.logout_endpoint)) else {
            return false;
        };
        client
            .send(req)
            .await
            .is_ok_and(|r| r.status().is_redirection() || r.status().is_success())
    }
}

/// The sesskey from Moodle's logout confirmation form (`name="sesskey" value="..."`).
fn find_sesskey(page: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(page).ok()?;
    let at = text.find("name=\"sesskey\"")?;
    let rest = &text[at..];
    let v = rest.find("value=\"")? + 7;
    let key: String = rest[v..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!key.is_empty() && key.len() <= 32).then_some(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sesskey_is_read_from_the_confirmation_form() {
        let page = br#"<form method="post" action="/login/logout.php"><input type="hidden" name="sesskey" value="Ab12Cd34Ef"><button>Continue</button></form>"#;
        assert_eq!(super::find_sesskey(page).as_deref(), Some("Ab12Cd34Ef"));
        assert_eq!(super::find_sesskey(b"<p>no form</p>"), None);
    }
}
