//! The open-redirect shapes known from oauth2-proxy and mod_auth_openidc advisories and from
//! auth_userkey's own wantsurl handling (see docs/sso.md).

use super::*;

fn root() -> Wwwroot {
    Wwwroot::parse("https://lms.example.edu").unwrap()
}

#[test]
fn open_redirect_shapes_are_refused() {
    let w = root();
    for bad in [
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "/%2F%2Fevil.example/",
        "/%2f/evil.example/",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%255C%255Cevil.example",
        "/%252F%252Fevil.example",
        "/\t/evil.example/",
        "/ /evil.example/",
        "/%09/evil.example/",
        "/%0d%0a/evil.example/",
        "https://evil.example/",
        "http://lms.example.edu/",
        "https:evil.example",
        "https:/evil.example",
        "javascript:alert(1)",
        "data:text/html,x",
        "https://lms.example.edu@evil.example/",
        "https://lms.example.edu.evil.example/",
        "https://lms.example.edu:8443/",
        "https://evillms.example.edu/",
        "https://lms.example.edu%2F@evil.example/",
        "https://lms.example.edu%40evil.example/",
        "evil.example",
        "",
        "/auth/login",
    ] {
        assert_eq!(validate(&w, bad), None, "{bad:?} was accepted");
    }
}

#[test]
fn same_site_paths_and_urls_are_kept() {
    let w = root();
    assert_eq!(
        validate(&w, "/course/view.php?id=3").as_deref(),
        Some("/course/view.php?id=3")
    );
    assert_eq!(
        validate(&w, "https://lms.example.edu/my/").as_deref(),
        Some("/my/")
    );
    assert_eq!(
        validate(&w, "https://LMS.example.edu/my/").as_deref(),
        Some("/my/")
    );
    assert_eq!(
        validate(&w, "https://lms.example.edu").as_deref(),
        Some("/")
    );
    // Dot segments resolve as a browser would, and stay on the site.
    assert_eq!(validate(&w, "/a/../my/").as_deref(), Some("/my/"));
}

#[test]
fn a_wwwroot_with_a_path_confines_returns_under_it() {
    let w = Wwwroot::parse("https://lms.example.edu/moodle/").unwrap();
    assert_eq!(validate(&w, "/moodle/my/").as_deref(), Some("/moodle/my/"));
    assert_eq!(
        validate(&w, "https://lms.example.edu/moodle/my/").as_deref(),
        Some("/moodle/my/")
    );
    assert_eq!(validate(&w, "/other/"), None);
    assert_eq!(validate(&w, "/moodle/../other/"), None);
    assert_eq!(validate(&w, "/moodlex/"), None);
}
