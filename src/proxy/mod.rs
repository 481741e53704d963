//! The proxy core: sanitize the request, the one upstream interface (`upstream`: both clients
//! behind it), and the header rules (hop-by-hop, offload controls, X-Forwarded-*) that every
//! direction shares.

pub mod body;
pub mod config;
pub mod error_page;
pub mod headers;
pub mod sanitize;
pub mod upgrade;
pub mod upstream;
