//! moodle-edge: a reverse proxy that stands in front of a Moodle or Totara LMS.
//!
//! A request walks one pipeline of named stages (see `pipeline`), each in its own module:
//! `proxy::sanitize`, `route`, `webservice::guard`, `sso`, `proxy::forward`,
//! `sendfile` (the respond stage for offloaded files) and `observe::access_log`.
#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod mnet;
pub mod observe;
pub mod pipeline;
pub mod proxy;
pub mod route;
pub mod sendfile;
pub mod server;
pub mod sso;
pub mod state;
pub mod store;
pub mod timer;
pub mod webservice;
