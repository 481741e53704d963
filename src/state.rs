//! Shared state: everything built from the config (upstream client, TLS, limiters, breaker,
//! store, log sinks) in one value that a reload replaces whole, so a request sees one
//! consistent config from start to end; and the process-wide parts (metrics, health) that
//! outlive reloads.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::Registry;
use thiserror::Error;

use crate::config::Config;
use crate::mnet::metrics::MnetMetrics;
use crate::mnet::{MnetBuildError, MnetState};
use crate::observe::config::AccessFormat;
use crate::observe::health::UpstreamHealth;
use crate::observe::metrics::CoreMetrics;
use crate::observe::sink::LineSink;
use crate::proxy::upstream::{ClientError, Upstream};
use crate::sendfile::{Offloader, SendfileMetrics};
use crate::server::tls::{self, TlsError};
use crate::sso::{metrics::SsoMetrics, SsoBuildError, SsoState};
use crate::store::{metrics::StoreMetrics, Store, StoreError};
use crate::webservice::{Guard, GuardConfigError, WebserviceMetrics};

/// Built once per process, kept across reloads.
pub struct Process {
    pub registry: Registry,
    pub core: Arc<CoreMetrics>,
    pub sendfile: Arc<SendfileMetrics>,
    pub webservice: Arc<WebserviceMetrics>,
    pub mnet: Arc<MnetMetrics>,
    pub sso: Arc<SsoMetrics>,
    pub store: Arc<StoreMetrics>,
    pub upstream_health: UpstreamHealth,
}

impl Process {
    pub fn new() -> Result<Arc<Process>, prometheus::Error> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Arc::new(Process {
            core: Arc::new(CoreMetrics::register(&registry)?),
            sendfile: Arc::new(SendfileMetrics::register(&registry)?),
            webservice: Arc::new(WebserviceMetrics::register(&registry)?),
            mnet: Arc::new(MnetMetrics::register(&registry)?),
            sso: Arc::new(SsoMetrics::register(&registry)?),
            store: Arc::new(StoreMetrics::register(&registry)?),
            upstream_health: UpstreamHealth::default(),
            registry,
        }))
    }
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("webservice: {0}")]
    Guard(#[from] GuardConfigError),
    #[error(transparent)]
    Mnet(#[from] MnetBuildError),
    #[error(transparent)]
    Sso(#[from] SsoBuildError),
    #[error("log.{which}: cannot open: {source}")]
    Log {
        which: &'static str,
        source: std::io::Error,
    },
}

/// Everything a request needs, built from one config.
pub struct State {
    pub config: Config,
    pub process: Arc<Process>,
    /// The Moodle web server, and both clients that reach it.
    pub upstream: Upstream,
    /// One TLS server config per `server.listen` entry (None for plain listeners).
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    pub offloader: Offloader,
    /// Shared with the previous state when a reload leaves `webservice:` and `store:` unchanged,
    /// so rate-limit buckets, concurrency slots and breaker state survive a SIGHUP.
    pub guard: Arc<Guard>,
    pub store: Store,
    /// Single sign-on (None without an `sso:` section).
    pub sso: Option<Arc<SsoState>>,
    pub access_log: LineSink,
    pub access_format: AccessFormat,
    pub audit_log: LineSink,
    /// The MNet gateway (None without an `mnet:` section).
    pub mnet: Option<Arc<MnetState>>,
}

impl State {
    pub fn build(config: Config, process: Arc<Process>) -> Result<State, BuildError> {
        State::build_parts(config, process, true, None)
    }

    /// Builds the state for a reload: like `build`, but keeps the running guard when the
    /// `webservice:` section did not change. Token files are re-read only when the section
    /// changed, so a guard with `token_networks` is always rebuilt.
    pub fn rebuild(config: Config, previous: &State) -> Result<State, BuildError> {
        let keep = (config.webservice == previous.config.webservice
            && config.store == previous.config.store
            && config.webservice.token_networks.is_empty())
        .then(|| previous.guard.clone());
        State::build_parts(config, previous.process.clone(), true, keep)
    }

    /// Builds everything without opening log sinks: what `moodle-edge check` runs.
    pub fn dry_run(config: Config) -> Result<(), BuildError> {
        let process = Process::new().map_err(|e| BuildError::Log {
            which: "metrics",
            source: std::io::Error::other(e),
        })?;
        State::build_parts(config, process, false, None).map(|_| ())
    }

    fn build_parts(
        config: Config,
        process: Arc<Process>,
        open_logs: bool,
        guard: Option<Arc<Guard>>,
    ) -> Result<State, BuildError> {
        let upstream = Upstream::build(&config.upstream, process.core.clone())?;
        let tls = config
            .server
            .listen
            .iter()
            .enumerate()
            .map(|(i, l)| match &l.tls {
                Some(t) => tls::server_config(t, l.http2, i).map(Some),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let offloader = Offloader::new(&config.sendfile, process.sendfile.clone());
        let store = Store::build_with(&config.store, process.store.clone())?;
        let guard = match guard {
            Some(running) => running,
            None => Arc::new(Guard::with_store(
                &config.webservice,
                process.webservice.clone(),
                &store,
            )?),
        };
        let mnet = match &config.mnet {
            Some(m) => Some(Arc::new(MnetState::build(
                m,
                &config.moodle.wwwroot,
                process.mnet.clone(),
            )?)),
            None => None,
        };
        let sso = match &config.sso {
            Some(s) => Some(Arc::new(SsoState::build(
                s,
                &config.moodle.wwwroot,
                &config.upstream.url,
                store.clone(),
                process.sso.clone(),
                (&config.store, process.store.clone()),
            )?)),
            None => None,
        };
        let (access_log, audit_log) = if open_logs {
            (
                LineSink::open(&config.log.access.sink()).map_err(|source| BuildError::Log {
                    which: "access",
                    source,
                })?,
                LineSink::open(&config.log.audit).map_err(|source| BuildError::Log {
                    which: "audit",
                    source,
                })?,
            )
        } else {
            (LineSink::off(), LineSink::off())
        };
        Ok(State {
            access_format: config.log.access.format,
            config,
            process,
            upstream,
            tls,
            offloader,
            guard,
            store,
            sso,
            access_log,
            audit_log,
            mnet,
        })
    }
}

/// The current state; a reload stores a new one.
pub(crate) type SharedState = Arc<ArcSwap<State>>;
