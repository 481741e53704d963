//! The login page in a real browser: Debian's Chromium, headless, driven by playwright-core
//! (`tests/peers/browser/login.mjs`), in front of the real oidc-provider, SimpleSAMLphp, the
//! stand-in Moodle and the real moodle-edge binary. The script checks the page in two
//! languages, the provider list per tenant, labels, focus order and contrast, clicks through an
//! OIDC and a SAML login to wantsurl, and the provider choice with JavaScript off.
//!
//! `MOODLE_EDGE_SCREENSHOTS=DIR` keeps the login page screenshots in DIR (docs/ has them).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sso_common;
#[path = "sso_saml_common/mod.rs"]
mod sso_saml_common;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use sso_common::*;
use sso_saml_common::idp::{make_keypair, Idp, IdpOptions, PASSWORD, USER};

const WANTS_OIDC: &str = "/course/view.php?id=3";
const WANTS_SAML: &str = "/mod/forum/view.php?id=12";

fn browser_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/browser")
}

#[tokio::test]
async fn the_login_page_in_chromium_two_languages_two_tenants_oidc_and_saml_to_wantsurl() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: run scripts/install-test-deps.sh"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "tests/peers/browser/node_modules missing: run scripts/install-test-deps.sh"
    );
    let moodle = Moodle::start(&["alice", USER]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let op = OidcPeer::real(port);
    let keys = tempfile::tempdir().unwrap();
    let (sp_key, sp_cert) = make_keypair(keys.path(), "sp");
    let entity_id = format!("{base}/auth/saml/metadata");
    let idp = Idp::start(&base, &entity_id, &sp_cert, &IdpOptions::default());
    let metadata = reqwest::get(idp.metadata_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let md_file = idp.dir.path().join("idp-metadata.xml");
    std::fs::write(&md_file, metadata).unwrap();

    let mut sso = oidc_sso("campus", &op.issuer());
    sso["providers"][0]["label"] = json!({
        "en": "University account", "fr": "Compte universitaire", "nl": "Universiteitsaccount",
    });
    sso["providers"].as_array_mut().unwrap().push(json!({
        "id": "partner",
        "kind": "saml",
        "label": { "en": "Partner institution", "nl": "Partnerinstelling", "fr": "Établissement partenaire" },
        "idp_metadata_file": md_file,
        "sp_entity_id": entity_id,
        "sp_cert_file": sp_cert,
        "sp_key_file": sp_key,
        "user_attribute": "uid",
        "availability": "only",
        "tenants": ["acme"],
    }));
    sso["page"] = json!({
        "name": { "en": "Northfield University", "fr": "Université de Northfield", "nl": "Universiteit Northfield" },
        "logo_url": "/theme/northfield/logo.svg",
        "primary_colour": "#1a3a6b",
    });
    sso["tenants"] = json!([{
        "id": "acme",
        "page": {
            "name": { "en": "ACME University of Applied Sciences", "nl": "Hogeschool ACME" },
            "logo_url": "/theme/acme/logo.svg",
            "primary_colour": "#8a1c3b",
            "background_colour": "#f6f1ee",
        },
    }]);
    let edge = Edge::start(port, &moodle.url(), sso);

    let shots = std::env::var_os("MOODLE_EDGE_SCREENSHOTS").map(std::path::PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let cfg = json!({
        "edge": base,
        "op": op.issuer(),
        "wants_oidc": WANTS_OIDC,
        "wants_saml": WANTS_SAML,
        "oidc_user": "alice",
        "saml_user": USER,
        "saml_password": PASSWORD,
        "shots": shots.as_ref().map(|p| std::fs::canonicalize(p).unwrap()).unwrap_or_else(|| scratch.path().to_path_buf()),
    });
    let cfg_file = scratch.path().join("browser.json");
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let browser_run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir().join("login.mjs"))
            .arg(&cfg_file)
            .current_dir(browser_dir())
            .stdin(Stdio::null())
            .output()
            .expect("node must be installed (scripts/install-test-deps.sh)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&browser_run.stdout);
    let stderr = String::from_utf8_lossy(&browser_run.stderr);
    assert!(
        browser_run.status.success() && stdout.lines().any(|l| l == "done"),
        "the browser script failed\n{stdout}\n{stderr}\n--- edge ---\n{}\n--- idp ---\n{}",
        edge.output(),
        idp.log()
    );

    // Moodle saw both logins, each to its wantsurl.
    let logins = moodle.with(|s| s.logins.clone());
    let wants: Vec<String> = logins.iter().map(|(_, w)| w.clone()).collect();
    assert!(wants.contains(&format!("{base}{WANTS_OIDC}")), "{wants:?}");
    assert!(wants.contains(&format!("{base}{WANTS_SAML}")), "{wants:?}");
    assert_eq!(
        edge.metric(
            "moodle_edge_sso_logins_total{provider=\"partner\",result=\"ok\",tenant=\"acme\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        edge.metric("moodle_edge_sso_logins_total{provider=\"campus\",result=\"ok\",tenant=\"-\"}")
            .await,
        1.0
    );
    // Screenshots were taken (small PNGs).
    let dir = shots.unwrap_or_else(|| scratch.path().to_path_buf());
    for name in ["sso-login-site-fr.png", "sso-login-acme-nl.png"] {
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(len > 1000 && len < 200_000, "{name}: {len} bytes");
    }
}
