//! The YAML configuration: its schema (each section's struct lives beside the module that uses
//! it), loading, and the checks that turn a typo into an error naming the key.
//!
//! YAML is read with serde-saphyr, a pure-Rust, panic-free parser (serde_yaml is archived,
//! serde_yml carries an unsoundness advisory, and the other forks sit on unmaintained
//! unsafe-libyaml). The document is deserialized straight into the schema through
//! serde_path_to_error, so every error names the full key path (`server.limits.max_body_size`)
//! and each scalar is read as the type its key wants (an untyped value first would turn `off`
//! into a boolean and `0123` into a number before the schema is consulted).

pub(crate) mod units;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::mnet::config::MnetConfig;
use crate::observe::config::{LogConfig, SinkTarget};
use crate::proxy::config::UpstreamConfig;
use crate::sendfile::config::SendfileConfig;
use crate::server::config::ServerConfig;
use crate::sso::config::{Availability, SsoConfig};
use crate::store::config::StoreConfig;
use crate::webservice::config::WebserviceConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub moodle: MoodleConfig,
    #[serde(default)]
    pub sendfile: SendfileConfig,
    #[serde(default)]
    pub webservice: WebserviceConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub sso: Option<SsoConfig>,
    #[serde(default)]
    pub mnet: Option<MnetConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoodleConfig {
    /// `$CFG->wwwroot`: the site's public URL.
    pub wwwroot: String,
    /// `$CFG->dataroot`: checked for readability by /readyz.
    pub dataroot: PathBuf,
}

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, so an operator fixes them in one pass.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )])
        })?;
        let config = Config::parse(&text).map_err(|e| ConfigErrors(vec![e]))?;
        config.check()?;
        Ok(config)
    }

    /// Parses YAML text into the schema, without the checks that touch the file system.
    ///
    /// The YAML is deserialized straight into the schema, so a scalar is read as the type its
    /// key wants: `target: off` is the word `off`, `prefix: 0123` the text `0123`, and
    /// `http2: no` the boolean false (YAML 1.1 words), as an operator means them.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::new("", "the config file is empty"));
        }
        let options = serde_saphyr::options! { with_snippet: false };
        // A schema error stops the deserializer mid-document; keep it (with its key path)
        // rather than what the parser says about the rest of the document.
        let mut schema_error = None;
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let inner = e.into_inner();
                schema_error = Some(ConfigError::new(key, explain(inner.to_string())));
                inner
            })
        });
        match (parsed, schema_error) {
            (_, Some(e)) => Err(e),
            (Ok(config), None) => Ok(config),
            (Err(e), None) => Err(ConfigError::new("", format!("not valid YAML: {e}"))),
        }
    }

    /// The checks serde cannot express: values that must agree with each other, URLs that must
    /// parse, files that must exist.
    pub fn check(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        self.check_into(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn check_into(&self, errors: &mut Vec<ConfigError>) {
        let mut err = |key: String, message: String| errors.push(ConfigError::new(key, message));

        // server
        if self.server.listen.is_empty() {
            err(
                "server.listen".into(),
                "at least one listener is needed".into(),
            );
        }
        for (key, problem) in self.server.http2.problems() {
            err(format!("server.http2.{key}"), problem);
        }
        for (i, l) in self.server.listen.iter().enumerate() {
            if let Some(tls) = &l.tls {
                if tls.certificates.is_empty() {
                    err(
                        format!("server.listen[{i}].tls.certificates"),
                        "a TLS listener needs at least one certificate".into(),
                    );
                }
                for (j, c) in tls.certificates.iter().enumerate() {
                    let key = format!("server.listen[{i}].tls.certificates[{j}]");
                    file_must_exist(&mut err, &format!("{key}.cert_file"), &c.cert_file);
                    file_must_exist(&mut err, &format!("{key}.key_file"), &c.key_file);
                }
                if l.redirect_to_https {
                    err(
                        format!("server.listen[{i}].redirect_to_https"),
                        "only a plain (non-TLS) listener can redirect to https".into(),
                    );
                }
            }
            if let Some(admin) = self.server.admin_addr {
                if admin == l.addr {
                    err(
                        "server.admin_addr".into(),
                        format!(
                            "{admin} is also a public listener; the admin port must be separate"
                        ),
                    );
                }
            }
        }
        let limits = &self.server.limits;
        if limits.max_connections == 0 {
            err(
                "server.limits.max_connections".into(),
                "must be at least 1".into(),
            );
        }
        if limits.max_header_size.bytes() < 4096 {
            err(
                "server.limits.max_header_size".into(),
                "must be at least 4KiB (browsers send more than that)".into(),
            );
        }
        if !self.server.public_health_path.is_empty()
            && !self.server.public_health_path.starts_with('/')
        {
            err(
                "server.public_health_path".into(),
                "must start with / (or be empty to turn it off)".into(),
            );
        }

        // upstream
        match Url::parse(&self.upstream.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.host().is_none() {
                    err("upstream.url".into(), "has no host".into());
                }
                if u.path() != "/" || u.query().is_some() {
                    err(
                        "upstream.url".into(),
                        "must be scheme://host[:port] with no path or query".into(),
                    );
                }
            }
            Ok(u) => err(
                "upstream.url".into(),
                format!("scheme {:?} is not http or https", u.scheme()),
            ),
            Err(e) => err(
                "upstream.url".into(),
                format!("{:?} is not a URL: {e}", self.upstream.url),
            ),
        }
        if let Some(ca) = &self.upstream.ca_file {
            file_must_exist(&mut err, "upstream.ca_file", ca);
        }
        if !self.upstream.health_check.path.starts_with('/') {
            err(
                "upstream.health_check.path".into(),
                "must start with /".into(),
            );
        }

        // moodle
        match Url::parse(&self.moodle.wwwroot) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => err(
                "moodle.wwwroot".into(),
                format!("{:?} is not an http(s) URL", self.moodle.wwwroot),
            ),
        }
        dir_must_exist(&mut err, "moodle.dataroot", &self.moodle.dataroot);

        // sendfile
        for (i, m) in self.sendfile.mappings.iter().enumerate() {
            if m.prefix.len() < 3 || !m.prefix.starts_with('/') || !m.prefix.ends_with('/') {
                err(
                    format!("sendfile.mappings[{i}].prefix"),
                    format!(
                        "{:?} must start and end with / and name a directory (not / itself)",
                        m.prefix
                    ),
                );
            }
            dir_must_exist(&mut err, &format!("sendfile.mappings[{i}].root"), &m.root);
        }
        for (i, r) in self.sendfile.sendfile_roots.iter().enumerate() {
            if !r.is_absolute() {
                err(
                    format!("sendfile.sendfile_roots[{i}]"),
                    "must be an absolute path".into(),
                );
            }
            dir_must_exist(&mut err, &format!("sendfile.sendfile_roots[{i}]"), r);
        }

        // webservice
        let ws = &self.webservice;
        for (i, p) in ws.extra_entry_points.iter().enumerate() {
            if !p.starts_with('/') {
                err(
                    format!("webservice.extra_entry_points[{i}]"),
                    format!("{p:?} must start with /"),
                );
            }
        }
        for (i, r) in ws.rate_limits.iter().enumerate() {
            if r.burst == 0 {
                err(
                    format!("webservice.rate_limits[{i}].burst"),
                    "must be at least 1".into(),
                );
            }
            if let Some(f) = &r.functions {
                if f.is_empty() {
                    err(
                        format!("webservice.rate_limits[{i}].functions"),
                        "an empty list matches nothing; omit the key to apply the rule to every function".into(),
                    );
                }
            }
        }
        for (i, p) in ws.function_policy.iter().enumerate() {
            if p.allow.is_none() && p.deny.is_none() {
                err(
                    format!("webservice.function_policy[{i}]"),
                    "needs allow or deny (or both)".into(),
                );
            }
            if !p.path.starts_with('/') {
                err(
                    format!("webservice.function_policy[{i}].path"),
                    "must start with /".into(),
                );
            }
        }
        if let Some(cb) = &ws.circuit_breaker {
            for (key, v) in [
                ("error_rate", cb.error_rate),
                ("slow_call_rate", cb.slow_call_rate),
            ] {
                if !(v > 0.0 && v <= 1.0) {
                    err(
                        format!("webservice.circuit_breaker.{key}"),
                        format!("{v} must be above 0 and at most 1"),
                    );
                }
            }
            if cb.min_requests == 0 {
                err(
                    "webservice.circuit_breaker.min_requests".into(),
                    "must be at least 1".into(),
                );
            }
            if cb.window.get().as_millis() < 1000 {
                err(
                    "webservice.circuit_breaker.window".into(),
                    "must be at least 1s".into(),
                );
            }
        }
        for (i, t) in ws.token_networks.iter().enumerate() {
            file_must_exist(
                &mut err,
                &format!("webservice.token_networks[{i}].token_file"),
                &t.token_file,
            );
        }

        // store
        for (key, message) in self.store.problems() {
            err(key, message);
        }
        if let Some(f) = &self.store.redis_password_file {
            file_must_exist(&mut err, "store.redis_password_file", f);
        }
        if let Some(f) = &self.store.redis_ca_file {
            file_must_exist(&mut err, "store.redis_ca_file", f);
        }

        // sso
        if let Some(sso) = &self.sso {
            if let Some(f) = &sso.moodle_handoff.token_file {
                file_must_exist(&mut err, "sso.moodle_handoff.token_file", f);
            }
            let tenant_ids: Vec<&str> = sso.tenants.iter().map(|t| t.id.as_str()).collect();
            for (i, p) in sso.providers.iter().enumerate() {
                let key = format!("sso.providers[{i}]");
                if p.id.is_empty()
                    || !p
                        .id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    err(
                        format!("{key}.id"),
                        format!("{:?} must be letters, digits, - or _", p.id),
                    );
                }
                crate::sso::provider_check::check_kind(&key, p, &mut err);
                for (name, file) in [
                    ("client_secret_file", &p.client_secret_file),
                    ("client_key_file", &p.client_key_file),
                    ("idp_metadata_file", &p.idp_metadata_file),
                    ("sp_cert_file", &p.sp_cert_file),
                    ("sp_key_file", &p.sp_key_file),
                ] {
                    if let Some(f) = file {
                        file_must_exist(&mut err, &format!("{key}.{name}"), f);
                    }
                }
                if p.availability != Availability::All && p.tenants.is_empty() {
                    err(
                        format!("{key}.tenants"),
                        "availability only/except needs a list of tenants".into(),
                    );
                }
                for t in &p.tenants {
                    if !tenant_ids.contains(&t.as_str()) {
                        err(
                            format!("{key}.tenants"),
                            format!("names tenant {t:?}, which sso.tenants does not define"),
                        );
                    }
                }
            }
        }

        // mnet
        if let Some(mnet) = &self.mnet {
            file_must_exist(&mut err, "mnet.cert_file", &mnet.cert_file);
            file_must_exist(&mut err, "mnet.key_file", &mnet.key_file);
            if let Some(d) = &mnet.key_history_dir {
                dir_must_exist(&mut err, "mnet.key_history_dir", d);
            }
            for (i, p) in mnet.peers.iter().enumerate() {
                file_must_exist(
                    &mut err,
                    &format!("mnet.peers[{i}].cert_file"),
                    &p.cert_file,
                );
                if Url::parse(&p.wwwroot).is_err() {
                    err(
                        format!("mnet.peers[{i}].wwwroot"),
                        format!("{:?} is not a URL", p.wwwroot),
                    );
                }
            }
        }

        // log
        for (key, target, path) in [
            ("log.access", self.log.access.target, &self.log.access.path),
            ("log.audit", self.log.audit.target, &self.log.audit.path),
        ] {
            if target == SinkTarget::File && path.is_none() {
                err(format!("{key}.path"), "target: file needs a path".into());
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            err(
                "log.level".into(),
                format!("{:?} is not a log level or filter", self.log.level),
            );
        }
    }
}

/// Adds what to write to the few serde messages that only say what was expected.
fn explain(message: String) -> String {
    if message.contains("expected a boolean") || message.starts_with("invalid boolean") {
        format!("{message} (write true or false)")
    } else {
        message
    }
}

fn file_must_exist(err: &mut impl FnMut(String, String), key: &str, path: &Path) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => err(
            key.to_string(),
            format!("{} is not a regular file", path.display()),
        ),
        Err(e) => err(
            key.to_string(),
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

fn dir_must_exist(err: &mut impl FnMut(String, String), key: &str, path: &Path) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => err(
            key.to_string(),
            format!("{} is not a directory", path.display()),
        ),
        Err(e) => err(
            key.to_string(),
            format!("cannot read {}: {e}", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests;
