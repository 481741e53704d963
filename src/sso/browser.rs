//! The browser request as every SSO handler sees it: built once by the SSO stage from the
//! request head and connection, so protocol modules never depend on the pipeline's types.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

use super::tenant::Tenant;

/// One browser request to an SSO path (or a page whose session is checked).
#[derive(Debug, Clone)]
pub(crate) struct BrowserRequest {
    /// For error pages and log lines, so a person's report can be matched to the log.
    pub request_id: String,
    /// The real client address (after trusted proxies): `user[ip]` for auth_userkey.
    pub client_ip: IpAddr,
    /// The browser reached the edge over TLS: the session cookie is `__Host-` and Secure.
    pub secure: bool,
    /// The Host, lower-cased, without port: picks the tenant.
    pub host: String,
    /// The Host as sent (lower-cased, with any port): where the browser comes back to.
    pub authority: String,
    pub method: Method,
    pub uri: Uri,
    /// The request headers (cookies, Accept-Language, Content-Type).
    pub headers: HeaderMap,
    /// The tenant this request belongs to (by host and/or path prefix), None for the site.
    pub tenant: Option<Arc<Tenant>>,
}

impl BrowserRequest {
    /// The tenant id, None for the site itself.
    pub(crate) fn tenant_id(&self) -> Option<&str> {
        self.tenant.as_ref().map(|t| t.id.as_str())
    }

    /// The first value of a query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        let q = self.uri.query()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A cookie's value by name (the first one, as browsers send the most specific first).
    pub(crate) fn cookie(&self, name: &str) -> Option<&str> {
        cookie_value(&self.headers, name)
    }
}

/// A cookie's value by name from the request's Cookie headers.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}
