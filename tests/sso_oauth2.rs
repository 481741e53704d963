//! Plain OAuth 2 providers (no OpenID Connect) end to end: the real oidc-provider serving a
//! client without the openid scope (so no ID token), its GitHub-shaped `/api/user` as the
//! userinfo endpoint, the stand-in Moodle and the real binary; then the refusals: a made-up
//! state, another browser's state, a replayed callback (code and state), config errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sso_common;

use serde_json::json;
use sso_common::*;

const WANTS: &str = "/course/view.php?id=5";

struct World {
    moodle: Moodle,
    _op: OidcPeer,
    edge: Edge,
}

fn world() -> World {
    let moodle = Moodle::start(&["alice"]);
    // The plugin's Create/Update user on, so the profile fields are sent and checked.
    moodle.with(|s| s.profile_fields = true);
    let port = free_port();
    let op = OidcPeer::real_with_oauth2(port);
    let mut sso = oauth2_sso("hub", &op.issuer());
    sso["moodle_handoff"]["send_profile"] = true.into();
    let edge = Edge::start(port, &moodle.url(), sso);
    World {
        moodle,
        _op: op,
        edge,
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl World {
    fn start_url(&self) -> String {
        format!(
            "{}?provider=hub&return={}",
            self.edge.url("/auth/login"),
            urlencode(WANTS)
        )
    }
}

#[tokio::test]
async fn login_with_a_plain_oauth2_provider_ends_in_moodle_at_wantsurl() {
    let w = world();
    let b = Browser::new();
    // The authorization request: PKCE S256, the configured scope, no openid (no OIDC).
    let first = b.get(&w.start_url()).await;
    assert_eq!(first.status, 303);
    let to = first.next_url().unwrap();
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "read:user");
    assert!(q["redirect_uri"].ends_with("/auth/oauth2/callback"));
    assert!(!q.contains_key("nonce"));

    let pages = b.oidc_login(&w.start_url(), "alice").await;
    let last = pages.last().unwrap();
    assert_eq!(
        last.text,
        format!("Logged in as alice at {WANTS}"),
        "{:?}\n{}",
        pages
            .iter()
            .map(|p| (p.status, p.url.to_string()))
            .collect::<Vec<_>>(),
        w.edge.output()
    );
    assert!(pages
        .iter()
        .any(|p| p.url.path() == "/auth/oauth2/callback"));
    // Moodle was asked for the mapped fields of the userinfo document.
    let call = w.moodle.with(|s| s.ws_calls.last().cloned()).unwrap();
    assert_eq!(call["user[username]"], "alice");
    assert_eq!(call["user[email]"], "alice@example.org");
    assert_eq!(call["user[firstname]"], "Given alice Family");
    assert_eq!(
        w.edge
            .metric("moodle_edge_sso_logins_total{provider=\"hub\",result=\"ok\",tenant=\"-\"}")
            .await,
        1.0
    );
    let out = w.edge.output();
    let sid = b.cookie("127.0.0.1", "moodle-edge-sso").unwrap();
    for secret in [USERKEY_TOKEN, CLIENT_SECRET, sid.as_str()] {
        assert!(!out.contains(secret), "log holds a secret");
    }
    // Logout at the edge ends the edge and Moodle sessions (no provider logout in OAuth 2).
    let confirm = b.get(&w.edge.url("/auth/logout")).await;
    let pages = b.submit(&confirm, &[]).await;
    assert_eq!(pages.last().unwrap().url.path(), "/auth/login");
    assert!(b.cookie("127.0.0.1", "moodle-edge-sso").is_none());
    assert_eq!(w.moodle.session_count(), 0);
}

#[tokio::test]
async fn a_wrong_state_another_browsers_state_and_a_replayed_code_are_refused() {
    let w = world();
    // A made-up state.
    let b = Browser::new();
    let p = b
        .get(&w.edge.url("/auth/oauth2/callback?code=abc&state=madeup"))
        .await;
    assert_eq!(p.status, 400);
    w.edge
        .wait_log(&["\"reason\":\"state\"", "unknown or used state"])
        .await;
    // An OIDC callback's state is not an OAuth 2 one (and the reverse).
    let p = b
        .get(&w.edge.url("/auth/oidc/callback?code=abc&state=madeup"))
        .await;
    assert_eq!(p.status, 400);

    // A real flow: walk it up to the callback, without following it.
    let victim = Browser::new();
    let mut pages = victim.follow(victim.get(&w.start_url()).await).await;
    for _ in 0..4 {
        let last = pages.last().unwrap().clone();
        if !last.url.path().starts_with("/interaction/") {
            break;
        }
        let fill: Vec<(&str, &str)> = if last.text.contains("name=\"login\"") {
            vec![("login", "alice"), ("password", "any")]
        } else {
            vec![]
        };
        pages = victim.submit(&last, &fill).await;
    }
    let callback = pages
        .iter()
        .find(|p| p.url.path() == "/auth/oauth2/callback")
        .expect("reached the callback")
        .url
        .clone();
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as alice at {WANTS}")
    );
    // The same callback URL (code and state) from another browser ...
    let attacker = Browser::new();
    let p = attacker.get(callback.as_str()).await;
    assert_eq!(p.status, 400);
    assert!(attacker.cookie("127.0.0.1", "moodle-edge-sso").is_none());
    // ... and again from the victim's: the code is replayed, refused as such.
    let again = victim.get(callback.as_str()).await;
    assert_eq!(again.status, 400);
    w.edge
        .wait_log(&["\"reason\":\"replay\"", "state used twice"])
        .await;
    assert_eq!(
        w.moodle.with(|s| s.ws_calls.len()),
        1,
        "a refused callback reached Moodle"
    );
}

#[tokio::test]
async fn a_state_started_in_another_browser_is_not_this_ones() {
    let w = world();
    // The victim starts a login; the attacker gets the victim's browser to the callback with the
    // attacker's own code (login CSRF): the state is the victim's, the binding cookie is not.
    let victim = Browser::new();
    let to_provider = victim.get(&w.start_url()).await;
    let state: String = to_provider
        .next_url()
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let attacker = Browser::new();
    let p = attacker
        .get(&w.edge.url(&format!(
            "/auth/oauth2/callback?code=attackers-code&state={state}"
        )))
        .await;
    assert_eq!(p.status, 400);
    w.edge.wait_log(&["state not bound to this browser"]).await;
    assert!(w.moodle.with(|s| s.ws_calls.is_empty()));
}

/// `moodle-edge check` on a config with `provider`; its stderr and success.
fn check(provider: serde_json::Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), USERKEY_TOKEN).unwrap();
    std::fs::write(dir.path().join("secret"), CLIENT_SECRET).unwrap();
    let mut provider = provider;
    provider["client_secret_file"] = json!(dir.path().join("secret"));
    let config = json!({
        "server": { "listen": [{ "addr": format!("127.0.0.1:{}", free_port()) }] },
        "upstream": { "url": "http://127.0.0.1:9" },
        "moodle": { "wwwroot": "https://lms.test", "dataroot": dir.path() },
        "sso": {
            "moodle_handoff": { "token_file": dir.path().join("token") },
            "providers": [provider],
        },
    });
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_the_key() {
    let base = json!({
        "id": "hub", "kind": "oauth2", "client_id": "x", "user_claim": "login",
        "oauth2": {
            "authorization_endpoint": "https://hub.test/login/oauth/authorize",
            "token_endpoint": "https://hub.test/login/oauth/access_token",
            "userinfo_endpoint": "https://api.hub.test/user",
            "subject_field": "id",
        },
    });
    let (ok, err) = check(base.clone());
    assert!(ok, "{err}");
    let mut no_block = base.clone();
    no_block.as_object_mut().unwrap().remove("oauth2");
    let (ok, err) = check(no_block);
    assert!(!ok && err.contains("sso.providers[0].oauth2"), "{err}");
    let mut bad_url = base.clone();
    bad_url["oauth2"]["token_endpoint"] = json!("ftp://hub.test/token");
    let (ok, err) = check(bad_url);
    assert!(
        !ok && err.contains("sso.providers[0].oauth2.token_endpoint"),
        "{err}"
    );
    let mut no_user = base.clone();
    no_user.as_object_mut().unwrap().remove("user_claim");
    let (ok, err) = check(no_user);
    assert!(!ok && err.contains("sso.providers[0].user_claim"), "{err}");
    let mut unknown = base;
    unknown["oauth2"]["userinfo"] = json!("x");
    let (ok, err) = check(unknown);
    assert!(!ok && err.contains("userinfo"), "{err}");
}
