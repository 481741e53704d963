//! moodle-edge: a reverse proxy that stands in front of a Moodle or Totara LMS.
//!
//! A request walks one pipeline of named stages (see `pipeline`), each in its own module with
//! the one stage shape (`stage`) over one request context (`context`): `proxy::sanitize`,
//! `route`, `webservice::stage`, `sso`, the upstream call (`proxy::upstream`), `respond`
//! (with `sendfile` for offloaded files) and `observe::log_stage`.
#![forbid(unsafe_code)]

pub mod body;
pub mod check;
pub mod config;
pub mod context;
#[doc(hidden)]
pub mod fuzzing;
pub mod mnet;
pub mod observe;
pub mod pipeline;
pub mod proxy;
pub mod respond;
pub mod route;
pub mod sendfile;
pub mod server;
pub mod sso;
pub mod stage;
pub mod state;
pub mod store;
pub mod timer;
pub mod webservice;
