//! moodle-edge: a reverse proxy that stands in front of a Moodle or Totara LMS.
//!
//! A request walks one pipeline of named stages (see `pipeline`), each in its own module with
//! the one stage shape (`stage`) over one request context (`context`): `proxy::sanitize`,
//! `route`, `webservice::stage`, `sso`, the upstream call (`proxy::upstream`), `respond`
//! (with `sendfile` for offloaded files) and `observe::log_stage`.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub(crate) mod body;
pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod fuzzing;
pub(crate) mod mnet;
pub(crate) mod observe;
pub(crate) mod pipeline;
pub(crate) mod proxy;
pub(crate) mod respond;
pub(crate) mod route;
pub(crate) mod sendfile;
pub(crate) mod server;
pub(crate) mod sso;
pub(crate) mod stage;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod timer;
pub(crate) mod webservice;

#[doc(hidden)]
pub mod internals;
