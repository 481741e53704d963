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
    // Moodle was asked for alice, with her profile from the claims.
    let call = w.moodle.with(|s| s.ws_calls.last().cloned()).unwrap();
    assert_eq!(call["user[username]"], "alice");
    assert_eq!(call["user[email]"], "alice@example.edu");
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
