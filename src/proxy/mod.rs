//! The proxy core's stages: sanitize the request, forward it over the pooled upstream client,
//! and the header rules (hop-by-hop, X-Forwarded-*) both directions share.

pub mod body;
pub mod client;
pub mod config;
pub mod direct;
pub mod error_page;
pub mod forward;
pub mod headers;
pub mod sanitize;
pub mod upgrade;
