//! `webservice:` — rate limits, concurrency caps, function policy and the circuit breaker for
//! Moodle's web-service entry points.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::units::{Duration, Rate, Size};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebserviceConfig {
    /// More paths whose calls are web-service calls (plugins with their own endpoint).
    #[serde(default)]
    pub extra_entry_points: Vec<String>,
    /// A call must pass every rule that applies to it.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitRule>,
    /// Calls in flight per token; 0 turns the cap off.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_per_token: u32,
    /// How long a call waits for a free slot before it gets 429.
    #[serde(default = "default_concurrency_wait")]
    pub concurrency_wait: Duration,
    /// Which functions each entry point may serve.
    #[serde(default)]
    pub function_policy: Vec<FunctionPolicy>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Tokens that may only be used from these networks (token read from a file).
    #[serde(default)]
    pub token_networks: Vec<TokenNetworks>,
    /// How much of a POST body is read to find wstoken / wsfunction (the body still reaches
    /// Moodle whole, byte for byte).
    #[serde(default = "default_max_inspect_body")]
    pub max_inspect_body: Size,
    /// With `store.backend: redis`: how replicas share the limits and the breaker.
    #[serde(default)]
    pub across_replicas: AcrossReplicas,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcrossReplicas {
    /// One budget per key across every replica (shared), or one per replica (local).
    #[serde(default)]
    pub rate_limits: Sharing,
    /// Breaker state changes are published to the other replicas (shared) or kept (local).
    #[serde(default)]
    pub circuit_breaker: Sharing,
    /// What a limit check does when Redis fails or is slow.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// A limit check waiting longer than this on Redis counts as a fault.
    #[serde(default = "default_store_timeout")]
    pub store_timeout: Duration,
    /// After a fault, checks follow `on_store_error` this long before one tries Redis again.
    #[serde(default = "default_retry_store_after")]
    pub retry_store_after: Duration,
}

impl Default for AcrossReplicas {
    fn default() -> Self {
        AcrossReplicas {
            rate_limits: Sharing::default(),
            circuit_breaker: Sharing::default(),
            on_store_error: OnStoreError::default(),
            store_timeout: default_store_timeout(),
            retry_store_after: default_retry_store_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    Shared,
    Local,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Fail open to this replica's own limiter (each replica then allows the full limit).
    #[default]
    Local,
    /// Admit every call (no limit while Redis is out).
    Open,
    /// Refuse every limited call with 503 (no call passes unchecked).
    Closed,
}

impl OnStoreError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Local => "local",
            OnStoreError::Open => "open",
            OnStoreError::Closed => "closed",
        }
    }
}

impl Default for WebserviceConfig {
    fn default() -> Self {
        WebserviceConfig {
            extra_entry_points: Vec::new(),
            rate_limits: Vec::new(),
            max_concurrent_per_token: default_max_concurrent(),
            concurrency_wait: default_concurrency_wait(),
            function_policy: Vec::new(),
            circuit_breaker: None,
            token_networks: Vec::new(),
            max_inspect_body: default_max_inspect_body(),
            across_replicas: AcrossReplicas::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    Token,
    Ip,
    Function,
}

impl LimitKey {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKey::Token => "token",
            LimitKey::Ip => "ip",
            LimitKey::Function => "function",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// One bucket per token, client IP or function name.
    pub key: LimitKey,
    pub rate: Rate,
    /// Calls allowed at once above the steady rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Applies only to these functions (a trailing * matches a prefix); omitted: every function.
    #[serde(default)]
    pub functions: Option<Vec<String>>,
    /// A name for metrics and logs; defaults to "KEY" or "KEY:FUNCTIONS".
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionPolicy {
    pub path: String,
    /// Only these functions (trailing * = prefix); everything else is refused at the edge.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// These functions are refused.
    #[serde(default)]
    pub deny: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    #[serde(default = "default_window")]
    pub window: Duration,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Share of failed calls that opens the breaker.
    #[serde(default = "default_half")]
    pub error_rate: f64,
    #[serde(default = "default_slow_call")]
    pub slow_call_duration: Duration,
    /// Share of calls slower than slow_call_duration that opens it.
    #[serde(default = "default_half")]
    pub slow_call_rate: f64,
    /// Then half-open: one probe decides.
    #[serde(default = "default_open_for")]
    pub open_for: Duration,
    /// Also keep one breaker per function, so one broken function does not close the site.
    #[serde(default)]
    pub per_function: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenNetworks {
    /// A file holding the token (32 hex characters).
    pub token_file: PathBuf,
    pub networks: Vec<IpNet>,
}

fn default_max_concurrent() -> u32 {
    2
}
fn default_concurrency_wait() -> Duration {
    Duration::from_millis(500)
}
fn default_max_inspect_body() -> Size {
    Size(1 << 20)
}
fn default_store_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_retry_store_after() -> Duration {
    Duration::from_secs(1)
}
fn default_burst() -> u32 {
    1
}
fn default_window() -> Duration {
    Duration::from_secs(30)
}
fn default_min_requests() -> u32 {
    20
}
fn default_half() -> f64 {
    0.5
}
fn default_slow_call() -> Duration {
    Duration::from_secs(5)
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}
