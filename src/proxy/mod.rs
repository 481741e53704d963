//! The proxy core: sanitize the request, the one upstream interface (`upstream`: both clients
//! behind it), and the header rules (hop-by-hop, offload controls, X-Forwarded-*) that every
//! direction shares.

pub(crate) mod body;
pub(crate) mod config;
pub(crate) mod error_page;
pub(crate) mod headers;
pub(crate) mod sanitize;
pub(crate) mod upgrade;
pub(crate) mod upstream;
