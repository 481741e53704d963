//! Single sign-on with OpenID Connect, end to end: the real oidc-provider (npm, v9), the
//! stand-in Moodle with auth_userkey, the real moodle-edge binary, and a cookie-jar browser.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sso_common;

use sso_common::*;

const WANTS: &str = "/course/view.php?id=3";

struct World {
    moodle: Moodle,
    op: OidcPeer,
    edge: Edge,
}

fn world(users: &[&str]) -> World {
    let moodle = Moodle::start(users);
    let port = free_port();
    let op = OidcPeer::real(port);
    let edge = Edge::start(port, &moodle.url(), oidc_sso("campus", &op.issuer()));
    World { moodle, op, edge }
}

impl World {
    fn start_url(&self) -> String {
        format!(
            "{}?provider=campus&return={}",
            self.edge.url("/auth/login"),
            urlencode(WANTS)
        )
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn login(w: &World, b: &Browser, who: &str) -> Vec<Page> {
    let pages = b.oidc_login(&w.start_url(), who).await;
    let last = pages.last().unwrap();
    assert_eq!(
        last.status,
        200,
        "{:#?}\n{}",
        pages
            .iter()
            .map(|p| (p.status, p.url.to_string()))
            .collect::<Vec<_>>(),
        w.edge.output()
    );
    assert_eq!(last.text, format!("Logged in as {who} at {WANTS}"));
    pages
}

#[tokio::test]
async fn login_walks_from_the_edge_through_the_provider_into_moodle_at_wantsurl() {
    let w = world(&["alice"]);
    let b = Browser::new();
    // The login page offers the provider, in the browser's language.
    b.send("GET", &w.edge.url("/login/index.php"), None, None)
        .await;
    let page = b
        .get(&format!("{}?lang=fr", w.edge.url("/auth/login")))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Compte universitaire"), "{}", page.text);
    assert!(page.text.contains("lang=\"fr\""));

    let pages = login(&w, &b, "alice").await;
    // The edge cookie: HttpOnly, SameSite=Lax, set on the callback's answer.
    let callback = pages
        .iter()
        .find(|p| p.url.path() == "/auth/oidc/callback")
        .expect("went through the callback");
    let set = callback
        .set_cookie("moodle-edge-sso")
        .expect("session cookie set");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    // Moodle was asked for alice and nothing else: the plugin's IP restriction and profile
    // updates are off here (its defaults), and Moodle refuses fields it does not expect.
    let call = w.moodle.with(|s| s.ws_calls.last().cloned()).unwrap();
    assert_eq!(call["user[username]"], "alice");
    assert!(!call.contains_key("user[email]"));
    assert!(!call.contains_key("user[ip]"));
    let (_, wants) = w.moodle.with(|s| s.logins.last().cloned()).unwrap();
    assert_eq!(wants, w.edge.url(WANTS));
    assert_eq!(
        w.edge
            .metric("moodle_edge_sso_logins_total{provider=\"campus\",result=\"ok\",tenant=\"-\"}")
            .await,
        1.0
    );
    // No token, secret or cookie value in the log.
    let out = w.edge.output();
    let sid = b.cookie("127.0.0.1", "moodle-edge-sso").unwrap();
    for secret in [USERKEY_TOKEN, CLIENT_SECRET, sid.as_str()] {
        assert!(!out.contains(secret), "log holds a secret");
    }
}

#[tokio::test]
async fn a_page_that_needs_a_login_is_where_the_sign_in_ends() {
    // Moodle's require_login() keeps the page in its own session and redirects to a bare
    // /login/index.php; the edge adds the page as wantsurl on the way.
    let w = world(&["alice"]);
    let b = Browser::new();
    let pages = b.follow(b.get(&w.edge.url(WANTS)).await).await;
    let page = pages.last().unwrap();
    assert_eq!(page.url.path(), "/login/index.php", "{:?}", page.url);
    let wantsurl = page
        .url
        .query_pairs()
        .find(|(k, _)| k == "wantsurl")
        .map(|(_, v)| v.into_owned());
    assert_eq!(wantsurl.as_deref(), Some(WANTS));
    let ret = format!("name=\"return\" value=\"{}\"", WANTS.replace('&', "&amp;"));
    assert!(page.text.contains(&ret), "{}", page.text);
    let start = format!(
        "{}?provider=campus&return={}",
        w.edge.url("/auth/login"),
        urlencode(WANTS)
    );
    let pages = b.oidc_login(&start, "alice").await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as alice at {WANTS}")
    );
}

#[tokio::test]
async fn a_handoff_with_fields_the_plugin_does_not_expect_is_a_clear_page() {
    // send_profile on while the plugin's Create/Update user is off: Moodle refuses the call.
    let moodle = Moodle::start(&["alice"]);
    let port = free_port();
    let op = OidcPeer::real(port);
    let mut sso = oidc_sso("campus", &op.issuer());
    sso["moodle_handoff"]["send_profile"] = true.into();
    let edge = Edge::start(port, &moodle.url(), sso);
    let b = Browser::new();
    let start = format!(
        "{}?provider=campus&return={}",
        edge.url("/auth/login"),
        urlencode(WANTS)
    );
    let pages = b.oidc_login(&start, "alice").await;
    let last = pages.last().unwrap();
    assert!(
        last.status >= 500 && last.text.contains("Moodle did not accept the sign-in"),
        "{}",
        last.text
    );
    assert!(moodle.with(|s| s.logins.is_empty()));
    edge.wait_log(&["sso: login refused", "Invalid parameter value detected"])
        .await;
    // With the plugin's profile updates on, the same call goes through with the profile.
    moodle.with(|s| s.profile_fields = true);
    let pages = b.oidc_login(&start, "alice").await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as alice at {WANTS}")
    );
    let call = moodle.with(|s| s.ws_calls.last().cloned()).unwrap();
    assert_eq!(call["user[email]"], "alice@example.edu");
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_then_ends_edge_moodle_and_provider_sessions() {
    let w = world(&["alice"]);
    let b = Browser::new();
    login(&w, &b, "alice").await;
    assert_eq!(w.moodle.session_count(), 1);

    // A POST without the token (or with a wrong one) ends nothing.
    for form in [vec![], vec![("csrf", "0000")]] {
        let p = b.post(&w.edge.url("/auth/logout"), &form).await;
        assert_eq!(p.status, 403);
    }
    let still = b.get(&w.edge.url(WANTS)).await;
    assert_eq!(still.status, 200, "still signed in");

    // The confirmation page carries the token.
    let confirm = b.get(&w.edge.url("/auth/logout")).await;
    assert_eq!(confirm.status, 200);
    let pages = b.submit(&confirm, &[]).await;
    // The provider asks to confirm its own sign-out; then it sends us back.
    let last = pages.last().unwrap().clone();
    let pages = if last.text.contains("op.logoutForm") {
        b.submit(&last, &[("logout", "yes")]).await
    } else {
        pages
    };
    let last = pages.last().unwrap();
    assert_eq!(
        last.url.path(),
        "/auth/login",
        "{:?}",
        pages.iter().map(|p| p.url.to_string()).collect::<Vec<_>>()
    );
    assert!(last.text.contains("signed out"), "{}", last.text);
    // All three sessions are over: edge cookie gone, Moodle's session ended, and the provider
    // asks for a login again.
    assert!(b.cookie("127.0.0.1", "moodle-edge-sso").is_none());
    assert_eq!(w.moodle.session_count(), 0);
    let again = b.follow(b.get(&w.start_url()).await).await;
    let at = again.last().unwrap();
    assert!(
        at.url.path().starts_with("/interaction/") && at.text.contains("name=\"login\""),
        "provider session still alive: {}",
        at.url
    );
    drop(w.op);
}

// ------------------------------------------------------------------------------------------
// refused logins (the rogue provider mints the bad tokens)

struct Rogue {
    moodle: Moodle,
    op: OidcPeer,
    edge: Edge,
}

fn rogue_world(sso_tweak: impl FnOnce(&mut serde_json::Value)) -> Rogue {
    let moodle = Moodle::start(&["mallory"]);
    let port = free_port();
    let op = OidcPeer::rogue();
    let mut sso = oidc_sso("rogue", &op.issuer());
    sso["providers"][0]["userinfo"] = false.into();
    sso_tweak(&mut sso);
    let edge = Edge::start(port, &moodle.url(), sso);
    Rogue { moodle, op, edge }
}

impl Rogue {
    fn start(&self, ret: &str) -> String {
        format!(
            "{}?provider=rogue&return={}",
            self.edge.url("/auth/login"),
            urlencode(ret)
        )
    }
}

#[tokio::test]
async fn bad_id_tokens_are_refused_with_their_reason_and_nobody_is_let_in() {
    let w = rogue_world(|_| {});
    for (mode, reason) in [
        ("wrong_key", "bad_signature"),
        ("none", "bad_signature"),
        ("hs256_pubkey", "bad_signature"),
        ("expired", "expired"),
        ("wrong_nonce", "nonce"),
        ("wrong_aud", "audience"),
        ("wrong_iss", "protocol"),
    ] {
        w.op.set_mode(mode).await;
        let b = Browser::new();
        let pages = b.follow(b.get(&w.start(WANTS)).await).await;
        let last = pages.last().unwrap();
        assert_eq!(last.url.path(), "/auth/oidc/callback", "{mode}");
        assert_eq!(last.status, 400, "{mode}: {}", last.text);
        assert!(last.text.contains("Sign-in failed"));
        assert!(
            b.cookie("127.0.0.1", "moodle-edge-sso").is_none(),
            "{mode}: session made"
        );
        w.edge
            .wait_log(&["login refused", &format!("\"reason\":\"{reason}\"")])
            .await;
        let failures = w
            .edge
            .metric(&format!(
                "moodle_edge_sso_login_failures_total{{provider=\"rogue\",reason=\"{reason}\"}}"
            ))
            .await;
        assert!(failures >= 1.0, "{mode}");
    }
    assert!(
        w.moodle.with(|s| s.ws_calls.is_empty()),
        "Moodle was asked to log someone in"
    );
    // The same provider with a good token lets mallory in: the refusals above were the tokens'.
    w.op.set_mode("good").await;
    let b = Browser::new();
    let pages = b.follow(b.get(&w.start(WANTS)).await).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as mallory at {WANTS}")
    );
}

#[tokio::test]
async fn state_must_be_known_fresh_and_this_browsers() {
    let w = rogue_world(|_| {});
    w.op.set_mode("good").await;
    // A made-up state.
    let b = Browser::new();
    let p = b
        .get(&w.edge.url("/auth/oidc/callback?code=abc&state=madeup"))
        .await;
    assert_eq!(p.status, 400);
    w.edge
        .wait_log(&["\"reason\":\"state\"", "unknown or used state"])
        .await;

    // A state started in another browser: the callback URL alone does not log anyone in.
    let victim = Browser::new();
    let to_provider = victim.get(&w.start(WANTS)).await;
    let at_provider = victim.get(to_provider.next_url().unwrap().as_str()).await;
    let callback = at_provider.next_url().unwrap();
    let attacker = Browser::new();
    let p = attacker.get(callback.as_str()).await;
    assert_eq!(p.status, 400);
    w.edge.wait_log(&["state not bound to this browser"]).await;
    assert!(attacker.cookie("127.0.0.1", "moodle-edge-sso").is_none());

    // A callback replayed (code and state used once already) is refused.
    let b = Browser::new();
    let pages = b.follow(b.get(&w.start(WANTS)).await).await;
    let cb = pages
        .iter()
        .find(|p| p.url.path() == "/auth/oidc/callback")
        .unwrap()
        .url
        .clone();
    assert_eq!(pages.last().unwrap().status, 200);
    let again = b.get(cb.as_str()).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        w.moodle.with(|s| s.ws_calls.len()),
        1,
        "a replay reached Moodle"
    );
}

#[tokio::test]
async fn return_urls_off_the_site_never_reach_wantsurl() {
    let w = rogue_world(|_| {});
    w.op.set_mode("good").await;
    let site = w.edge.url("");
    for bad in [
        "//evil.example/",
        "/\\evil.example/",
        "/%2F%2Fevil.example/",
        "/%5Cevil.example",
        "/\t/evil.example/",
        "https://evil.example/",
        "https:evil.example",
        "javascript:alert(1)",
        &format!("{site}@evil.example/"),
        &format!("{site}.evil.example/"),
        "http://127.0.0.1.evil.example/",
    ] {
        let b = Browser::new();
        let pages = b.follow(b.get(&w.start(bad)).await).await;
        let last = pages.last().unwrap();
        assert!(
            last.url.as_str().starts_with(&site),
            "{bad:?} ended at {}",
            last.url
        );
        let (_, wants) = w.moodle.with(|s| s.logins.last().cloned()).unwrap();
        assert_eq!(wants, format!("{site}/"), "{bad:?} became wantsurl {wants}");
    }
    // The wantsurl parameter of Moodle's own login page goes through the same check.
    let b = Browser::new();
    let page = b
        .get(&format!(
            "{}?wantsurl={}",
            w.edge.url("/login/index.php"),
            urlencode("https://evil.example/")
        ))
        .await;
    assert!(
        page.text.contains("name=\"return\" value=\"/\""),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn moodle_refusing_the_user_is_a_clear_page_not_a_loop() {
    let w = rogue_world(|_| {});
    w.op.set_mode("good").await;
    w.moodle.with(|s| s.users.clear());
    let b = Browser::new();
    let pages = b.follow(b.get(&w.start(WANTS)).await).await;
    let last = pages.last().unwrap();
    assert_eq!(last.status, 502);
    assert!(last.text.contains("User is not exist"), "{}", last.text);
    assert!(pages.len() <= 4, "{} hops", pages.len());
    assert!(b.cookie("127.0.0.1", "moodle-edge-sso").is_none());
}

#[tokio::test]
async fn a_session_cookie_from_another_tenant_is_not_a_session_here() {
    let w = rogue_world(|sso| {
        sso["tenants"] = serde_json::json!([{ "id": "acme", "hosts": ["acme.test"] }]);
    });
    w.op.set_mode("good").await;
    let b = Browser::new();
    let pages = b.follow(b.get(&w.start(WANTS)).await).await;
    assert_eq!(pages.last().unwrap().status, 200);
    let sid = b.cookie("127.0.0.1", "moodle-edge-sso").unwrap();
    // The site's own login page with the cookie: signed in, so a fresh hand-off.
    let here = b.get(&w.edge.url("/auth/login")).await;
    assert_eq!(here.status, 303);
    assert!(here.location.unwrap().contains("/auth/userkey/login.php"));
    // The same cookie on the acme tenant's host: the login page, no hand-off.
    let other = Browser::new();
    other.set_cookie("acme.test", "moodle-edge-sso", &sid);
    let host = format!("acme.test:{}", w.edge.addr.port());
    let page = other
        .send("GET", &w.edge.url("/auth/login"), None, Some(&host))
        .await;
    assert_eq!(page.status, 200, "{:?}", page.location);
    assert!(page.text.contains("provider"));
    assert_eq!(w.moodle.with(|s| s.ws_calls.len()), 2);
}

#[tokio::test]
async fn local_accounts_bypass_unless_the_tenant_switches_it_off() {
    let w = rogue_world(|sso| {
        sso["tenants"] =
            serde_json::json!([{ "id": "acme", "hosts": ["acme.test"], "local_login": false }]);
    });
    let b = Browser::new();
    // Moodle's login page is the edge's ...
    let page = b.get(&w.edge.url("/login/index.php")).await;
    assert!(page.text.contains("University account"), "{}", page.text);
    // ... unless a local account asks for Moodle's own form.
    let local = b.get(&w.edge.url("/login/index.php?local=1")).await;
    assert_eq!(local.text, "Moodle's own login form");
    let host = format!("acme.test:{}", w.edge.addr.port());
    let off = b
        .send(
            "GET",
            &w.edge.url("/login/index.php?local=1"),
            None,
            Some(&host),
        )
        .await;
    assert_eq!(off.status, 403);
    let post = b
        .send(
            "POST",
            &w.edge.url("/login/index.php"),
            Some(&[("username", "admin"), ("password", "x")]),
            Some(&host),
        )
        .await;
    assert_eq!(post.status, 403);
}

#[tokio::test]
async fn the_client_ip_is_passed_when_moodle_binds_keys_to_it() {
    let w = rogue_world(|sso| {
        sso["moodle_handoff"]["send_client_ip"] = true.into();
    });
    w.op.set_mode("good").await;
    w.moodle.with(|s| s.ip_restriction = true);
    let b = Browser::new();
    let pages = b.follow(b.get(&w.start(WANTS)).await).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as mallory at {WANTS}")
    );
    let call = w.moodle.with(|s| s.ws_calls.last().cloned()).unwrap();
    assert_eq!(call["user[ip]"], "127.0.0.1");
}

// ------------------------------------------------------------------------------------------
// back-channel logout

#[tokio::test]
async fn backchannel_logout_ends_the_session_and_forged_or_replayed_tokens_are_refused() {
    let moodle = Moodle::start(&["alice"]);
    let port = free_port();
    let op = OidcPeer::real_with_backchannel(port, Some(format!("{}/record-bcl", moodle.url())));
    let edge = Edge::start(port, &moodle.url(), oidc_sso("campus", &op.issuer()));
    moodle.with(|s| s.bcl_target = Some(edge.url("/auth/oidc/backchannel-logout")));
    let w = World { moodle, op, edge };
    let b = Browser::new();
    login(&w, &b, "alice").await;

    // The person signs out at the provider (another application's logout, say).
    let end = b
        .get(&format!(
            "{}/session/end?client_id={CLIENT_ID}",
            w.op.issuer()
        ))
        .await;
    b.submit(&end, &[("logout", "yes")]).await;
    wait_for_async(
        "the back-channel logout",
        std::time::Duration::from_secs(10),
        || w.moodle.with(|s| !s.bcl_bodies.is_empty()),
    )
    .await;
    w.edge
        .wait_log(&["back-channel logout", "\"sessions\":1"])
        .await;
    // The browser's next Moodle page ends its Moodle session too, and lands on the login page.
    let pages = b.follow(b.get(&w.edge.url(WANTS)).await).await;
    assert!(b.cookie("127.0.0.1", "MoodleSession").is_none());
    assert!(b.cookie("127.0.0.1", "moodle-edge-sso").is_none());
    assert!(pages.last().unwrap().text.contains("University account"));

    // The same token again: refused (jti seen once).
    let body = w.moodle.with(|s| s.bcl_bodies[0].clone());
    let raw = reqwest::Client::new();
    let url = w.edge.url("/auth/oidc/backchannel-logout");
    let send = |body: String| {
        let raw = raw.clone();
        let url = url.clone();
        async move {
            raw.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(body.clone()).await, 400);
    w.edge
        .wait_log(&["logout token refused", "jti replayed"])
        .await;
    // Forged: another sid in the payload, the signature kept.
    let token: String = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1
        .into_owned();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    claims["sid"] = "someone-else".into();
    claims["jti"] = "fresh-jti".into();
    parts[1] = b64.encode(claims.to_string());
    assert_eq!(send(format!("logout_token={}", parts.join("."))).await, 400);
    w.edge
        .wait_log(&["logout token refused", "bad signature"])
        .await;
    // Unsigned (alg none).
    let none = format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), parts[1]);
    assert_eq!(send(format!("logout_token={none}")).await, 400);
    assert_eq!(
        w.edge
            .metric("moodle_edge_sso_logouts_total{how=\"backchannel\",provider=\"campus\"}")
            .await,
        1.0
    );
}

// ------------------------------------------------------------------------------------------
// private_key_jwt client authentication

/// A private key made with the openssl command line: `ec` (P-256, PKCS#8) or `rsa` (PKCS#1).
fn make_client_key(dir: &std::path::Path, kind: &str) -> std::path::PathBuf {
    let path = dir.join(format!("client-{kind}.pem"));
    let args: Vec<&str> = match kind {
        "ec" => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        _ => vec!["genrsa", "-traditional"],
    };
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(&args).arg("-out").arg(&path);
    if kind != "ec" {
        cmd.arg("2048");
    }
    let status = cmd
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed (scripts/install-test-deps.sh)");
    assert!(status.success(), "openssl {kind} key");
    path
}

/// The provider registers `registered` as the client's key; the edge signs with `used`.
fn key_jwt_world(registered: &std::path::Path, used: &std::path::Path) -> World {
    let moodle = Moodle::start(&["alice"]);
    let port = free_port();
    let op = OidcPeer::real_with(
        port,
        None,
        serde_json::json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "client_key_file": registered,
            "client_key_id": "edge-key-1",
        }),
    );
    let mut sso = oidc_sso("campus", &op.issuer());
    let p = sso["providers"][0].as_object_mut().unwrap();
    p.remove("client_secret_file");
    p.insert("client_auth".into(), "private_key_jwt".into());
    p.insert("client_key_file".into(), serde_json::json!(used));
    p.insert("client_key_id".into(), "edge-key-1".into());
    let edge = Edge::start(port, &moodle.url(), sso);
    World { moodle, op, edge }
}

#[tokio::test]
async fn private_key_jwt_authenticates_the_edge_with_its_own_key_rsa_and_ec() {
    let keys = tempfile::tempdir().unwrap();
    for kind in ["ec", "rsa"] {
        let key = make_client_key(keys.path(), kind);
        let w = key_jwt_world(&key, &key);
        let b = Browser::new();
        login(&w, &b, "alice").await;
        // No secret went anywhere: the provider knows only the public key.
        assert!(!w.edge.output().contains(CLIENT_SECRET));
    }
}

#[tokio::test]
async fn private_key_jwt_with_a_key_the_provider_does_not_know_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let registered = make_client_key(keys.path(), "ec");
    let other = keys.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let used = make_client_key(&other, "ec");
    let w = key_jwt_world(&registered, &used);
    let b = Browser::new();
    let pages = b.oidc_login(&w.start_url(), "alice").await;
    let last = pages.last().unwrap();
    assert_eq!(last.status, 502, "{}", last.text);
    w.edge
        .wait_log(&["login refused", "\"reason\":\"provider\"", "invalid_client"])
        .await;
    assert!(w.moodle.with(|s| s.ws_calls.is_empty()));
}

/// `moodle-edge check` on a config whose OIDC provider is changed by `tweak`.
fn check_oidc(
    tweak: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), USERKEY_TOKEN).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a key").unwrap();
    let mut sso = oidc_sso("campus", "https://op.test");
    sso["moodle_handoff"]["token_file"] = serde_json::json!(dir.path().join("token"));
    let p = sso["providers"][0].as_object_mut().unwrap();
    p.remove("client_secret_file");
    p.insert("client_auth".into(), "private_key_jwt".into());
    let junk = dir.path().join("junk.pem");
    p.insert("client_key_file".into(), serde_json::json!(junk));
    tweak(p);
    let config = serde_json::json!({
        "server": { "listen": [{ "addr": format!("127.0.0.1:{}", free_port()) }] },
        "upstream": { "url": "http://127.0.0.1:9" },
        "moodle": { "wwwroot": "https://lms.test", "dataroot": dir.path() },
        "sso": sso,
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
fn private_key_jwt_config_errors_name_the_key() {
    // A file that holds no key.
    let (ok, err) = check_oidc(|_| {});
    assert!(
        !ok && err.contains("sso.providers[0].client_key_file") && err.contains("no private key"),
        "{err}"
    );
    // No key file at all.
    let (ok, err) = check_oidc(|p| {
        p.remove("client_key_file");
    });
    assert!(
        !ok && err.contains("sso.providers[0].client_key_file") && err.contains("required"),
        "{err}"
    );
    // A key that does not exist.
    let (ok, err) = check_oidc(|p| {
        p.insert("client_key_file".into(), "/nonexistent/edge.pem".into());
    });
    assert!(
        !ok && err.contains("sso.providers[0].client_key_file"),
        "{err}"
    );
}
