//! The web-service guard: recognises calls to Moodle's web-service entry points and applies
//! function policy, token networks, rate limits, per-token concurrency caps and a circuit
//! breaker, with Moodle-shaped error answers, an audit log and metrics. See `guard` for the
//! facade the proxy core calls.

pub(crate) mod audit;
pub(crate) mod breaker;
pub(crate) mod breaker_sync;
pub(crate) mod concurrency;
pub(crate) mod config;
pub mod entry;
pub(crate) mod errors;
pub(crate) mod guard;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod outcome;
pub(crate) mod params;
pub(crate) mod policy;
pub(crate) mod shared_limits;
pub(crate) mod stage;
pub(crate) mod token;

pub(crate) use guard::{Admission, GuardConfigError};
pub use guard::{Guard, WsCall};
pub use metrics::WebserviceMetrics;
