//! Where the person was going when Moodle sent them to its login page.
//!
//! Moodle's `require_login()` keeps the page asked for in its own session (`$SESSION->wantsurl`)
//! and redirects to a bare `/login/index.php`, which the edge intercepts; auth_userkey then only
//! follows a `wantsurl` it is given, so without this a sign-in always ended on the front page
//! (seen against a real Moodle 4.5). For a GET of a Moodle page, the stage registers this
//! watcher: when Moodle answers with a redirect to an intercepted login path that carries no
//! `wantsurl`, the request's own path and query are added as `wantsurl`. The login page checks
//! it like every return URL (`return_url::validate`), so nothing off-site can come of it.

use std::sync::Arc;

use http::header::LOCATION;
use http::uri::PathAndQuery;
use http::{HeaderValue, Response};
use url::Url;

use crate::body::ProxyBody;
use crate::context::{RequestContext, Seen, Watch};

use super::SsoState;

pub(crate) struct ReturnWatch {
    /// The page asked for (path and query), the `wantsurl` to add; shares the request's
    /// bytes (no copy for the many answers that are not a login redirect).
    wanted: PathAndQuery,
    /// wwwroot (to resolve a relative Location and know our origin) and `sso.intercept`.
    sso: Arc<SsoState>,
}

impl ReturnWatch {
    /// Only page addresses Moodle may answer with a login redirect: its PHP scripts and
    /// directory indexes.
    pub(crate) fn wanted_for(path: &str) -> bool {
        path.contains(".php") || path.ends_with('/')
    }

    pub(crate) fn new(wanted: PathAndQuery, sso: Arc<SsoState>) -> ReturnWatch {
        ReturnWatch { wanted, sso }
    }
}

/// The Location with `wantsurl` added, when it is a redirect to an intercepted login path on
/// wwwroot's origin without one.
fn rewrite(root: &Url, intercept: &[String], wanted: &str, location: &str) -> Option<String> {
    let mut target = root.join(location).ok()?;
    if target.origin() != root.origin()
        || !intercept.iter().any(|p| p == target.path())
        || target.query_pairs().any(|(k, _)| k == "wantsurl")
    {
        return None;
    }
    target.query_pairs_mut().append_pair("wantsurl", wanted);
    Some(target.to_string())
}

impl Watch for ReturnWatch {
    fn response(self: Box<Self>, _ctx: &RequestContext, mut response: Response<ProxyBody>) -> Seen {
        if response.status().is_redirection() {
            let rewritten = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| {
                    let sso = &self.sso;
                    rewrite(
                        &sso.wwwroot.url,
                        &sso.config.intercept,
                        self.wanted.as_str(),
                        l,
                    )
                })
                .and_then(|l| HeaderValue::from_str(&l).ok());
            if let Some(l) = rewritten {
                response.headers_mut().insert(LOCATION, l);
            }
        }
        Seen::Now(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(wanted: &str, location: &str) -> Option<String> {
        let root = Url::parse("https://lms.example.edu/moodle").unwrap();
        rewrite(
            &root,
            &["/moodle/login/index.php".to_string()],
            wanted,
            location,
        )
    }

    #[test]
    fn a_redirect_to_the_login_page_gets_the_page_asked_for() {
        let w = "/moodle/course/view.php?id=2";
        assert_eq!(
            rw(w, "https://lms.example.edu/moodle/login/index.php").as_deref(),
            Some("https://lms.example.edu/moodle/login/index.php?wantsurl=%2Fmoodle%2Fcourse%2Fview.php%3Fid%3D2")
        );
        assert!(rw(w, "/moodle/login/index.php").is_some());
    }

    #[test]
    fn other_redirects_are_left_alone() {
        let w = "/moodle/course/view.php?id=2";
        assert_eq!(rw(w, "https://lms.example.edu/moodle/my/"), None);
        assert_eq!(rw(w, "https://evil.example/moodle/login/index.php"), None);
        assert_eq!(rw(w, "http://lms.example.edu/moodle/login/index.php"), None);
        assert_eq!(rw(w, "/moodle/login/index.php?wantsurl=%2Fmoodle%2F"), None);
    }
}
