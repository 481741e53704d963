//! The web-service guard: recognises calls to Moodle's web-service entry points and applies
//! function policy, token networks, rate limits, per-token concurrency caps and a circuit
//! breaker, with Moodle-shaped error answers, an audit log and metrics. See `guard` for the
//! facade the proxy core calls.

pub mod audit;
pub mod breaker;
pub(crate) mod breaker_sync;
pub mod concurrency;
pub mod config;
pub mod entry;
pub mod errors;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod params;
pub mod policy;
pub(crate) mod shared_limits;
pub mod stage;
pub mod token;

pub use entry::EntryKind;
pub use guard::{Admission, Guard, GuardConfigError, Rejection, WsCall, WsFormat};
pub use metrics::WebserviceMetrics;
pub use outcome::{CallReport, OutcomeClass, UpstreamFailure};
pub use token::fingerprint;
