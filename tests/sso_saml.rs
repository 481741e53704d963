//! SAML 2.0 single sign-on end to end: a real SimpleSAMLphp IdP, the stand-in Moodle with
//! auth_userkey, the real moodle-edge binary and a cookie-jar browser. The hostile responses
//! are real signed responses from that IdP, mutated (and, where the rule under test needs it,
//! signed again with the IdP's own key, so only that rule can refuse them).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sso_common;
#[path = "sso_saml_common/mod.rs"]
mod sso_saml_common;

use std::path::PathBuf;

use serde_json::{json, Value};
use sso_common::*;
use sso_saml_common::forge;
use sso_saml_common::idp::{make_keypair, Idp, IdpOptions, PASSWORD, USER};

const WANTS: &str = "/course/view.php?id=7";
const PROVIDER: &str = "partner";

struct World {
    moodle: Moodle,
    idp: Idp,
    edge: Edge,
    /// Holds the SP's key pair.
    _keys: tempfile::TempDir,
    sp_key: PathBuf,
    entity_id: String,
}

fn sso_section(
    idp_metadata: &str,
    sp_cert: &str,
    sp_key: &str,
    entity_id: &str,
    extra: Value,
) -> Value {
    json!({
        "intercept": ["/login/index.php"],
        // This site has the plugin's "Update user" on, so the profile goes along.
        "moodle_handoff": { "token_file": "{DIR}/userkey-token", "mapping_field": "username", "send_profile": true },
        "providers": [{
            "id": PROVIDER,
            "kind": "saml",
            "label": { "en": "Partner institution" },
            "idp_metadata_file": idp_metadata,
            "sp_entity_id": entity_id,
            "sp_cert_file": sp_cert,
            "sp_key_file": sp_key,
            "user_attribute": "uid",
            "saml": extra,
        }],
    })
}

async fn world_with(opts: IdpOptions, extra: Value) -> World {
    world_from(opts, extra, false).await
}

/// `by_url`: the edge fetches the IdP metadata from the IdP instead of reading a file.
async fn world_from(opts: IdpOptions, mut extra: Value, by_url: bool) -> World {
    let moodle = Moodle::start(&[USER]);
    moodle.with(|s| s.profile_fields = true);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let entity_id = format!("{base}/auth/saml/metadata");
    let keys = tempfile::tempdir().unwrap();
    let (sp_key, sp_cert) = make_keypair(keys.path(), "sp");
    let idp = Idp::start(&base, &entity_id, &sp_cert, &opts);
    let metadata = reqwest::get(idp.metadata_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let md_file = idp.dir.path().join("idp-metadata.xml");
    std::fs::write(&md_file, metadata).unwrap();
    if by_url {
        extra["idp_metadata_url"] = json!(idp.metadata_url());
    }
    let mut sso = sso_section(
        md_file.to_str().unwrap(),
        sp_cert.to_str().unwrap(),
        sp_key.to_str().unwrap(),
        &entity_id,
        extra,
    );
    if by_url {
        sso["providers"][0]
            .as_object_mut()
            .unwrap()
            .remove("idp_metadata_file");
    }
    let edge = Edge::start(port, &moodle.url(), sso);
    World {
        moodle,
        idp,
        edge,
        _keys: keys,
        sp_key,
        entity_id,
    }
}

async fn world() -> World {
    world_with(IdpOptions::default(), json!({})).await
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The SAMLResponse the IdP auto-posts, with the page that carries it.
struct Posted {
    action: String,
    response: String,
    relay_state: Option<String>,
}

fn hidden(text: &str, name: &str) -> Option<String> {
    let key = format!("name=\"{name}\" value=\"");
    let at = text.find(&key)? + key.len();
    Some(
        text[at..at + text[at..].find('"')?]
            .replace("&amp;", "&")
            .replace("&quot;", "\""),
    )
}

impl World {
    fn start_url(&self) -> String {
        format!(
            "{}?provider={PROVIDER}&return={}",
            self.edge.url("/auth/login"),
            urlencode(WANTS)
        )
    }

    /// Walks the login from the edge to the IdP's auto-post page, without posting it.
    async fn idp_response(&self, b: &Browser) -> Posted {
        let pages = b.follow(b.get(&self.start_url()).await).await;
        let mut last = pages.last().unwrap().clone();
        if last.text.contains("name=\"password\"") {
            let pages = b
                .submit(&last, &[("username", USER), ("password", PASSWORD)])
                .await;
            last = pages.last().unwrap().clone();
        }
        let response = hidden(&last.text, "SAMLResponse").unwrap_or_else(|| {
            panic!(
                "no SAMLResponse at {}: {}\n{}",
                last.url,
                last.text,
                self.idp.log()
            )
        });
        let start = last.text.find("<form").unwrap();
        let action = last.text[start..]
            .split("action=\"")
            .nth(1)
            .and_then(|a| a.split('"').next())
            .unwrap()
            .to_string();
        Posted {
            action,
            response,
            relay_state: hidden(&last.text, "RelayState"),
        }
    }

    /// POSTs a (possibly forged) response to the ACS as the IdP's page would, then follows.
    async fn post_acs(
        &self,
        b: &Browser,
        response_xml_b64: &str,
        relay: Option<&str>,
    ) -> Vec<Page> {
        let mut form = vec![("SAMLResponse", response_xml_b64)];
        if let Some(r) = relay {
            form.push(("RelayState", r));
        }
        let first = b.post(&self.edge.url("/auth/saml/acs"), &form).await;
        b.follow(first).await
    }

    fn moodle_logins(&self) -> usize {
        self.moodle.with(|s| s.logins.len())
    }

    /// Asserts the last post was refused with `reason`, logged, and let nobody in.
    async fn assert_refused(&self, pages: &[Page], reason: &str, logins_before: usize) {
        let last = pages.last().unwrap();
        assert!(
            last.status >= 400 && last.text.contains("Sign-in failed"),
            "expected a refusal ({reason}), got {} at {}: {}",
            last.status,
            last.url,
            last.text
        );
        // The log line of this very request (by its id) names the reason.
        let rid = last
            .text
            .split("Request id: ")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .expect("the page names its request id");
        self.edge
            .wait_log(&["sso: login refused", rid, &format!("saml {reason}:")])
            .await;
        assert_eq!(self.moodle_logins(), logins_before, "someone was let in");
    }
}

#[tokio::test]
async fn login_walks_from_the_edge_through_simplesamlphp_into_moodle_at_wantsurl() {
    let w = world().await;
    let b = Browser::new();
    let posted = w.idp_response(&b).await;
    assert_eq!(posted.action, w.edge.url("/auth/saml/acs"));
    let pages = w
        .post_acs(&b, &posted.response, posted.relay_state.as_deref())
        .await;
    let last = pages.last().unwrap();
    assert_eq!(
        last.text,
        format!("Logged in as {USER} at {WANTS}"),
        "{:?}\n{}",
        pages
            .iter()
            .map(|p| (p.status, p.url.to_string()))
            .collect::<Vec<_>>(),
        w.edge.output()
    );
    // Moodle was asked for the uid attribute's value, with the profile from the attributes.
    let call = w.moodle.with(|s| s.ws_calls.last().cloned()).unwrap();
    assert_eq!(call["user[username]"], USER);
    assert_eq!(call["user[email]"], format!("{USER}@example.org"));
    assert_eq!(call["user[firstname]"], "Stu");
    // Neither the SAML message nor the session cookie is in the log.
    let out = w.edge.output();
    assert!(
        !out.contains(&posted.response[..40]),
        "the log holds the SAMLResponse"
    );
    let sid = b.cookie("127.0.0.1", "moodle-edge-sso").unwrap();
    assert!(!out.contains(&sid), "the log holds the session id");
    assert_eq!(
        w.edge
            .metric("moodle_edge_sso_logins_total{provider=\"partner\",result=\"ok\",tenant=\"-\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn sp_metadata_is_served_and_signed() {
    let w = world().await;
    let b = Browser::new();
    let page = b.get(&w.edge.url("/auth/saml/metadata")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains(&format!("entityID=\"{}\"", w.entity_id)),
        "{}",
        page.text
    );
    assert!(page.text.contains(&w.edge.url("/auth/saml/acs")));
    assert!(page.text.contains("<ds:SignatureValue>"), "{}", page.text);
}

#[tokio::test]
async fn hostile_responses_are_refused_with_a_logged_reason_and_nobody_let_in() {
    let w = world().await;
    let b = Browser::new();
    let (other_key, _) = make_keypair(w._keys.path(), "other");
    let past = "2020-01-01T00:00:00Z";
    // Each case: a name, the mutation of a fresh real response, the reason it must be refused.
    type Mutate = Box<dyn Fn(&str) -> String>;
    let idp_key = w.idp.key_file.clone();
    let k1 = idp_key.clone();
    let k2 = idp_key.clone();
    let k3 = idp_key.clone();
    let k4 = idp_key.clone();
    let acs = w.edge.url("/auth/saml/acs");
    let entity = w.entity_id.clone();
    let cases: Vec<(&str, Mutate, &str)> = vec![
        ("unsigned", Box::new(forge::strip_signatures), "signature"),
        (
            "signed by another key",
            Box::new(move |x| forge::resign_response(x, &other_key)),
            "signature",
        ),
        (
            "expired",
            Box::new(move |x| {
                forge::resign_response(&forge::set_all_attr(x, "NotOnOrAfter", past), &k1)
            }),
            "expired",
        ),
        (
            "wrong audience",
            Box::new(move |x| {
                let aud = format!("<saml:Audience>{entity}</saml:Audience>");
                forge::resign_response(
                    &forge::edit(
                        x,
                        &aud,
                        "<saml:Audience>https://other.example/sp</saml:Audience>",
                    ),
                    &k2,
                )
            }),
            "audience",
        ),
        (
            "wrong destination",
            Box::new(move |x| {
                forge::resign_response(
                    &forge::edit(
                        x,
                        &format!("Destination=\"{acs}\""),
                        "Destination=\"https://other.example/acs\"",
                    ),
                    &k3,
                )
            }),
            "destination",
        ),
        (
            "unsolicited",
            Box::new(move |x| {
                let id = forge::attr(x, "InResponseTo");
                forge::resign_response(&x.replace(&format!(" InResponseTo=\"{id}\""), ""), &k4)
            }),
            "unsolicited",
        ),
    ];
    for (name, mutate, reason) in cases {
        let posted = w.idp_response(&b).await;
        let before = w.moodle_logins();
        let forged = forge::encode(&mutate(&forge::decode(&posted.response)));
        let pages = w.post_acs(&b, &forged, None).await;
        eprintln!("case {name}");
        w.assert_refused(&pages, reason, before).await;
    }
    // Signature wrapping: every known shape, built from a real signed response.
    let posted = w.idp_response(&b).await;
    let xml = forge::decode(&posted.response);
    for (name, wrapped) in forge::wrapping_variants(&xml) {
        let before = w.moodle_logins();
        let pages = w.post_acs(&b, &forge::encode(&wrapped), None).await;
        let reason = if name == "content-changed" {
            "signature"
        } else {
            "shape"
        };
        eprintln!("case {name}");
        w.assert_refused(&pages, reason, before).await;
    }
    // The untouched response still works (its request is still pending): the refusals above
    // are the mutations', not the response's.
    let pages = w.post_acs(&b, &posted.response, None).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as {USER} at {WANTS}")
    );
}

#[tokio::test]
async fn a_replayed_response_is_refused() {
    let w = world().await;
    let b = Browser::new();
    let posted = w.idp_response(&b).await;
    let pages = w.post_acs(&b, &posted.response, None).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as {USER} at {WANTS}")
    );
    let before = w.moodle_logins();
    // The same response again, from another browser (an attacker who captured it).
    let thief = Browser::new();
    let pages = w.post_acs(&thief, &posted.response, None).await;
    w.assert_refused(&pages, "replay", before).await;
}

#[tokio::test]
async fn encrypted_assertions_are_decrypted_and_can_be_required() {
    let w = world_with(
        IdpOptions {
            encrypt_assertion: true,
            ..IdpOptions::default()
        },
        json!({ "require_encrypted_assertions": true }),
    )
    .await;
    let b = Browser::new();
    let posted = w.idp_response(&b).await;
    assert!(forge::decode(&posted.response).contains("EncryptedAssertion"));
    let pages = w.post_acs(&b, &posted.response, None).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as {USER} at {WANTS}"),
        "{}",
        w.edge.output()
    );
}

#[tokio::test]
async fn a_plain_assertion_is_refused_where_encryption_is_required() {
    let w = world_with(
        IdpOptions::default(),
        json!({ "require_encrypted_assertions": true }),
    )
    .await;
    let b = Browser::new();
    let posted = w.idp_response(&b).await;
    let before = w.moodle_logins();
    let pages = w.post_acs(&b, &posted.response, None).await;
    w.assert_refused(&pages, "not_encrypted", before).await;
}

/// Logs in and returns the browser.
async fn logged_in(w: &World) -> Browser {
    let b = Browser::new();
    let posted = w.idp_response(&b).await;
    let pages = w.post_acs(&b, &posted.response, None).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as {USER} at {WANTS}")
    );
    b
}

#[tokio::test]
async fn logout_here_sends_a_logout_request_to_the_idp_and_ends_both_sessions() {
    let w = world().await;
    let b = logged_in(&w).await;
    let confirm = b.get(&w.edge.url("/auth/logout")).await;
    assert_eq!(confirm.status, 200);
    let pages = b.submit(&confirm, &[]).await;
    let urls: Vec<String> = pages.iter().map(|p| p.url.to_string()).collect();
    // Through the IdP's SLO endpoint and back to our SLO endpoint with its LogoutResponse.
    assert!(
        urls.iter()
            .any(|u| u.contains("/saml2/idp/SingleLogoutService.php?SAMLRequest=")),
        "{urls:?}"
    );
    assert!(
        urls.iter()
            .any(|u| u.contains("/auth/saml/slo?SAMLResponse=")),
        "{urls:?}\n{}",
        w.idp.log()
    );
    let last = pages.last().unwrap();
    assert_eq!(last.url.path(), "/auth/login", "{urls:?}");
    w.edge
        .wait_log(&["saml: single logout confirmed by the IdP"])
        .await;
    assert!(b.cookie("127.0.0.1", "moodle-edge-sso").is_none());
    // The IdP's session is over too: a new login asks for the password again.
    let again = b.follow(b.get(&w.start_url()).await).await;
    assert!(
        again.last().unwrap().text.contains("name=\"password\""),
        "IdP session still alive"
    );
}

#[tokio::test]
async fn a_logout_request_from_the_idp_ends_the_edge_session_and_is_answered() {
    let w = world().await;
    let b = logged_in(&w).await;
    let after = w.idp.url("/done");
    // IdP-initiated logout: SimpleSAMLphp sends its LogoutRequest to every SP of the session.
    let start = b
        .get(&format!(
            "{}?RelayState={}",
            w.idp.url("/saml2/idp/initSLO.php"),
            urlencode(&after)
        ))
        .await;
    let pages = b.follow(start).await;
    let urls: Vec<String> = pages.iter().map(|p| p.url.to_string()).collect();
    assert!(
        urls.iter()
            .any(|u| u.contains("/auth/saml/slo?SAMLRequest=")),
        "{urls:?}\n{}",
        w.idp.log()
    );
    assert!(
        urls.iter()
            .any(|u| u.contains("/saml2/idp/SingleLogoutService.php?SAMLResponse=")),
        "{urls:?}\n{}",
        w.edge.output()
    );
    w.edge
        .wait_log(&["saml: single logout from the IdP", "\"sessions\":1"])
        .await;
    // The edge session is gone: the browser's next page is not signed in.
    let page = b.get(&w.edge.url(WANTS)).await;
    assert_ne!(page.text, format!("Logged in as {USER} at {WANTS}"));
}

#[tokio::test]
async fn a_forged_logout_request_ends_nothing() {
    let w = world().await;
    let b = logged_in(&w).await;
    // A LogoutRequest naming the session, unsigned, straight to our SLO endpoint.
    let xml = format!(
        "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
         xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_forged1\" Version=\"2.0\" \
         IssueInstant=\"{}\"><saml:Issuer>{}</saml:Issuer><saml:NameID>x</saml:NameID>\
         </samlp:LogoutRequest>",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        w.idp.entity_id()
    );
    let mut deflated = Vec::new();
    {
        use std::io::Write;
        let mut e =
            flate2::write::DeflateEncoder::new(&mut deflated, flate2::Compression::default());
        e.write_all(xml.as_bytes()).unwrap();
    }
    let b64 = forge::encode_bytes(&deflated);
    let page = b
        .get(&format!(
            "{}?SAMLRequest={}",
            w.edge.url("/auth/saml/slo"),
            urlencode(&b64)
        ))
        .await;
    assert_eq!(page.status, 400);
    w.edge
        .wait_log(&["saml: logout message refused", "signature"])
        .await;
    let still = b.get(&w.edge.url(WANTS)).await;
    assert_eq!(still.text, format!("Logged in as {USER} at {WANTS}"));
}

#[tokio::test]
async fn idp_metadata_can_come_from_a_url() {
    let w = world_from(IdpOptions::default(), json!({}), true).await;
    // Fetched in the background at start: poll until the login can start.
    let b = Browser::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let p = b.get(&w.start_url()).await;
        if p.status == 303 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metadata never fetched: {}",
            w.edge.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let posted = w.idp_response(&b).await;
    let pages = w.post_acs(&b, &posted.response, None).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as {USER} at {WANTS}")
    );
}

/// `moodle-edge check` on a config whose SAML provider is `provider`; its stderr and success.
fn check(provider: Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), USERKEY_TOKEN).unwrap();
    let mut sso = sso_section("", "", "", "https://lms.test/auth/saml/metadata", json!({}));
    sso["moodle_handoff"]["token_file"] = json!(dir.path().join("token"));
    sso["providers"][0] = provider;
    let config = json!({
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

#[tokio::test]
async fn config_errors_name_the_key() {
    let w = world().await;
    let metadata = reqwest::get(w.idp.metadata_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // IdP metadata without its signing certificate: samael would read responses unverified.
    let start = metadata.find("<md:KeyDescriptor").unwrap();
    let end = metadata.rfind("</md:KeyDescriptor>").unwrap() + "</md:KeyDescriptor>".len();
    let no_key = format!("{}{}", &metadata[..start], &metadata[end..]);
    let md = dir.path().join("no-key.xml");
    std::fs::write(&md, no_key).unwrap();
    let (ok, err) = check(json!({
        "id": "partner", "kind": "saml", "idp_metadata_file": md, "user_attribute": "uid",
    }));
    assert!(!ok);
    assert!(
        err.contains("sso.providers[0].idp_metadata_file") && err.contains("signing certificate"),
        "{err}"
    );
    // No metadata at all, a key without its certificate, an unknown key.
    let (ok, err) = check(json!({ "id": "partner", "kind": "saml", "user_attribute": "uid" }));
    assert!(
        !ok && err.contains("sso.providers[0].idp_metadata_file"),
        "{err}"
    );
    let good = dir.path().join("good.xml");
    std::fs::write(&good, &metadata).unwrap();
    let (ok, err) = check(json!({
        "id": "partner", "kind": "saml", "idp_metadata_file": good, "user_attribute": "uid",
        "sp_key_file": w.sp_key,
    }));
    assert!(!ok && err.contains("sso.providers[0].sp_key_file"), "{err}");
    let (ok, err) = check(json!({
        "id": "partner", "kind": "saml", "idp_metadata_file": good, "user_attribute": "uid",
        "saml": { "allow_sha-1": true },
    }));
    assert!(!ok && err.contains("allow_sha-1"), "{err}");
    // And the good one passes.
    let (ok, err) = check(json!({
        "id": "partner", "kind": "saml", "idp_metadata_file": good, "user_attribute": "uid",
    }));
    assert!(ok, "{err}");
}

#[tokio::test]
async fn a_response_to_a_login_started_in_another_browser_is_refused() {
    let w = world().await;
    // Login CSRF: the attacker starts a login in their own browser and gets their own signed
    // Response, then makes the victim's browser post it to the ACS.
    let attacker = Browser::new();
    let posted = w.idp_response(&attacker).await;
    let victim = Browser::new();
    let before = w.moodle_logins();
    let pages = w.post_acs(&victim, &posted.response, None).await;
    w.assert_refused(&pages, "unbound", before).await;
    assert!(victim.cookie("127.0.0.1", "moodle-edge-sso").is_none());
    // The same Response from the browser that started the login is fine: only the binding
    // refused it.
    let pages = w.post_acs(&attacker, &posted.response, None).await;
    assert_eq!(
        pages.last().unwrap().text,
        format!("Logged in as {USER} at {WANTS}")
    );
    // The binding cookie was HttpOnly and is gone after the login.
    assert!(attacker
        .cookie_names("127.0.0.1")
        .iter()
        .all(|n| !n.starts_with("moodle-edge-saml-")));
}

#[tokio::test]
async fn an_idp_initiated_relay_state_off_the_site_never_reaches_wantsurl() {
    let w = world_with(
        IdpOptions::default(),
        json!({ "allow_idp_initiated": true }),
    )
    .await;
    let site = w.edge.url("");
    for bad in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
    ] {
        let b = Browser::new();
        let posted = w.idp_response(&b).await;
        // The same signed Response made unsolicited (no InResponseTo), signed again by the IdP.
        let xml = forge::decode(&posted.response);
        let id = forge::attr(&xml, "InResponseTo");
        let unsolicited = forge::resign_response(
            &xml.replace(&format!(" InResponseTo=\"{id}\""), ""),
            &w.idp.key_file,
        );
        let pages = w
            .post_acs(&b, &forge::encode(&unsolicited), Some(bad))
            .await;
        let last = pages.last().unwrap();
        assert!(
            last.url.as_str().starts_with(&site),
            "{bad:?} ended at {}",
            last.url
        );
        assert_eq!(last.text, format!("Logged in as {USER} at /"), "{bad:?}");
        let (_, wants) = w.moodle.with(|s| s.logins.last().cloned()).unwrap();
        assert_eq!(wants, format!("{site}/"), "{bad:?} became wantsurl {wants}");
    }
}
