//! The route stage: classify a request once, so later stages match on a small enum instead of
//! re-parsing paths. The classes are also the `route` label of the request metrics. The stage
//! itself (`stage`), which also answers the edge's own routes, is beside this.

pub(crate) mod stage;

use crate::webservice::entry::EntryKind;

/// What a request is, decided from its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered by the edge itself (the public health path).
    Edge(EdgeRoute),
    /// A client asked for an internal offload prefix directly: always 404.
    Internal,
    /// A Moodle web-service entry point; the guard stage applies.
    WebService(EntryKind),
    /// A single sign-on path (`/auth/...` or an intercepted login page).
    Sso(SsoRoute),
    /// Moodle Network XML-RPC (`/mnet/xmlrpc/server.php`).
    Mnet,
    /// Everything else: pages, pluginfile.php, theme files, AJAX.
    Page,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeRoute {
    Health,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoRoute {
    Login,
    OidcCallback,
    /// `/auth/oauth2/callback`: the redirect URI of plain OAuth 2 providers.
    OAuth2Callback,
    SamlMetadata,
    SamlAcs,
    /// `/auth/saml/slo`: SAML single logout, both directions.
    SamlSlo,
    Logout,
    /// `/auth/oidc/backchannel-logout`: OpenID Connect back-channel logout.
    BackchannelLogout,
    /// A Moodle path listed in `sso.intercept`.
    Intercepted,
}

pub(crate) const MNET_PATH: &str = "/mnet/xmlrpc/server.php";

/// Every route label, in `Route::index` order.
pub(crate) const ROUTE_LABELS: [&str; 6] =
    ["edge", "internal", "webservice", "sso", "mnet", "page"];

impl Route {
    /// Position of this route's label in `ROUTE_LABELS` (for per-route metric handles made once).
    pub fn index(self) -> usize {
        match self {
            Route::Edge(_) => 0,
            Route::Internal => 1,
            Route::WebService(_) => 2,
            Route::Sso(_) => 3,
            Route::Mnet => 4,
            Route::Page => 5,
        }
    }

    /// The metrics label: low, fixed cardinality.
    pub fn label(self) -> &'static str {
        match self {
            Route::Edge(_) => "edge",
            Route::Internal => "internal",
            Route::WebService(_) => "webservice",
            Route::Sso(_) => "sso",
            Route::Mnet => "mnet",
            Route::Page => "page",
        }
    }
}

/// What the classifier needs to know, taken from the current state.
pub struct RouteTable<'a> {
    pub public_health_path: &'a str,
    pub is_internal: &'a dyn Fn(&str) -> bool,
    pub entry_kind: &'a dyn Fn(&str) -> Option<EntryKind>,
    /// `Some(intercept list)` when single sign-on is configured.
    pub sso_intercept: Option<&'a [String]>,
    pub mnet: bool,
}

pub fn classify(path: &str, table: &RouteTable<'_>) -> Route {
    if !table.public_health_path.is_empty() && path == table.public_health_path {
        return Route::Edge(EdgeRoute::Health);
    }
    if (table.is_internal)(path) {
        return Route::Internal;
    }
    if let Some(kind) = (table.entry_kind)(path) {
        return Route::WebService(kind);
    }
    if let Some(intercept) = table.sso_intercept {
        let sso = match path {
            "/auth/login" => Some(SsoRoute::Login),
            "/auth/oidc/callback" => Some(SsoRoute::OidcCallback),
            "/auth/oauth2/callback" => Some(SsoRoute::OAuth2Callback),
            "/auth/saml/metadata" => Some(SsoRoute::SamlMetadata),
            "/auth/saml/acs" => Some(SsoRoute::SamlAcs),
            "/auth/saml/slo" => Some(SsoRoute::SamlSlo),
            "/auth/logout" => Some(SsoRoute::Logout),
            "/auth/oidc/backchannel-logout" => Some(SsoRoute::BackchannelLogout),
            p if intercept.iter().any(|i| i == p) => Some(SsoRoute::Intercepted),
            _ => None,
        };
        if let Some(s) = sso {
            return Route::Sso(s);
        }
    }
    if table.mnet && path == MNET_PATH {
        return Route::Mnet;
    }
    Route::Page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table<'a>(intercept: Option<&'a [String]>) -> RouteTable<'a> {
        RouteTable {
            public_health_path: "/.moodle-edge/health",
            is_internal: &|p: &str| p.starts_with("/moodledata-internal/"),
            entry_kind: &|p: &str| (p == "/webservice/rest/server.php").then_some(EntryKind::Rest),
            sso_intercept: intercept,
            mnet: true,
        }
    }

    #[test]
    fn classes() {
        let t = table(None);
        assert_eq!(
            classify("/.moodle-edge/health", &t),
            Route::Edge(EdgeRoute::Health)
        );
        assert_eq!(
            classify("/moodledata-internal/filedir/x", &t),
            Route::Internal
        );
        assert_eq!(
            classify("/webservice/rest/server.php", &t),
            Route::WebService(EntryKind::Rest)
        );
        assert_eq!(classify("/mnet/xmlrpc/server.php", &t), Route::Mnet);
        assert_eq!(classify("/course/view.php", &t), Route::Page);
        // Without sso configured, /auth/* is Moodle's own (auth plugins live there).
        assert_eq!(classify("/auth/login", &t), Route::Page);
    }

    #[test]
    fn labels_and_indexes_agree() {
        for r in [
            Route::Edge(EdgeRoute::Health),
            Route::Internal,
            Route::WebService(EntryKind::Rest),
            Route::Sso(SsoRoute::Login),
            Route::Mnet,
            Route::Page,
        ] {
            assert_eq!(ROUTE_LABELS[r.index()], r.label());
        }
    }

    #[test]
    fn sso_paths_when_configured() {
        let intercept = vec!["/login/index.php".to_string()];
        let t = table(Some(&intercept));
        assert_eq!(classify("/auth/login", &t), Route::Sso(SsoRoute::Login));
        assert_eq!(
            classify("/auth/saml/acs", &t),
            Route::Sso(SsoRoute::SamlAcs)
        );
        assert_eq!(
            classify("/login/index.php", &t),
            Route::Sso(SsoRoute::Intercepted)
        );
    }
}
