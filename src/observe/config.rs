//! `log:` — where the access, audit and error logs go and in what shape.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Error and event log level: error, warn, info, debug, trace (or an env-filter string).
    #[serde(default = "default_level")]
    pub level: String,
    /// Error/event log shape: json or text.
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub access: AccessLogConfig,
    /// The web-service audit log (one line per call).
    #[serde(default)]
    pub audit: SinkConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: LogFormat::default(),
            access: AccessLogConfig::default(),
            audit: SinkConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub format: AccessFormat,
    #[serde(default)]
    pub target: SinkTarget,
    /// With target: file.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl AccessLogConfig {
    pub fn sink(&self) -> SinkConfig {
        SinkConfig {
            target: self.target,
            path: self.path.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessFormat {
    #[default]
    Json,
    /// Apache/nginx "combined" plus request time, upstream time and request id.
    Combined,
}

/// Where a log goes: standard output (the default, for the journal and containers), a file,
/// or nowhere.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub target: SinkTarget,
    /// With target: file.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkTarget {
    #[default]
    Stdout,
    File,
    Off,
}

fn default_level() -> String {
    "info".to_string()
}
