//! The running server: binds the listeners, serves until SIGTERM, reloads on SIGHUP, and tells
//! systemd how it is doing (READY, RELOADING, STOPPING, WATCHDOG).

pub(crate) mod activation;
pub(crate) mod admin;
pub(crate) mod config;
pub(crate) mod h2_flood;
pub(crate) mod head_scan;
pub(crate) mod listener;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::state::{BuildError, Process, SharedState, State};
use activation::Inherited;
use listener::{Acceptor, DrainSignal};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Unclaimed(#[from] activation::Unclaimed),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server that is bound and ready, not yet serving.
pub struct Server {
    shared: SharedState,
    process: Arc<Process>,
    listeners: Vec<(usize, TcpListener)>,
    admin: Option<TcpListener>,
    config_path: Option<PathBuf>,
    pub shutdown: CancellationToken,
}

impl Server {
    /// Builds the state and binds every listener (or takes them from systemd).
    pub async fn bind(config: Config, config_path: Option<PathBuf>) -> Result<Server, ServerError> {
        let process = Process::new()?;
        let mut inherited = Inherited::from_env();
        let mut listeners = Vec::new();
        for (i, l) in config.server.listen.iter().enumerate() {
            let bind_err = |source| ServerError::Bind {
                key: format!("server.listen[{i}].addr"),
                addr: l.addr,
                source,
            };
            let std_listener = inherited.take_or_bind(l.addr).map_err(bind_err)?;
            listeners.push((i, TcpListener::from_std(std_listener).map_err(bind_err)?));
        }
        let admin = match config.server.admin_addr {
            Some(addr) => {
                let bind_err = |source| ServerError::Bind {
                    key: "server.admin_addr".into(),
                    addr,
                    source,
                };
                let l = inherited.take_or_bind(addr).map_err(bind_err)?;
                Some(TcpListener::from_std(l).map_err(bind_err)?)
            }
            None => None,
        };
        inherited.finish()?;
        let state = State::build(config, process.clone())?;
        Ok(Server {
            shared: Arc::new(ArcSwap::from_pointee(state)),
            process,
            listeners,
            admin,
            config_path,
            shutdown: CancellationToken::new(),
        })
    }

    /// The bound public addresses (useful when the config asked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until SIGTERM/SIGINT (or `shutdown` is cancelled), then drains.
    pub async fn serve(self) {
        let Server {
            shared,
            process,
            listeners,
            admin,
            config_path,
            shutdown,
        } = self;
        let max_connections = shared.load().config.server.limits.max_connections;
        let connections = Arc::new(Semaphore::new(max_connections));
        let tracker = TaskTracker::new();
        // Connections drain once the token is cancelled (by the signal handling below or from
        // outside); they read the drain flag, not the token, on every wake-up.
        let drain = Arc::new(DrainSignal::default());
        tokio::spawn({
            let (drain, shutdown) = (drain.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                drain.start();
            }
        });

        for (index, listener) in listeners {
            let label = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!(listener = %label, "listening");
            let acceptor = Acceptor {
                index,
                label,
                shared: shared.clone(),
                connections: connections.clone(),
                shutdown: shutdown.clone(),
                drain: drain.clone(),
                tracker: tracker.clone(),
            };
            tokio::spawn(acceptor.run(listener));
        }
        if let Some(admin) = admin {
            tokio::spawn(serve_admin(admin, shared.clone(), shutdown.clone()));
        }
        tokio::spawn(probe_upstream(shared.clone(), shutdown.clone()));
        tokio::spawn(housekeeping(shared.clone(), shutdown.clone()));
        tokio::spawn(watchdog(shutdown.clone()));
        notify(&[sd_notify::NotifyState::Ready]);

        wait_for_signals(&shared, &process, config_path.as_deref(), &shutdown).await;
        // What was logged before the signal is written now, not after the drain.
        crate::observe::sink::flush_all();

        // Graceful stop: no new connections, in-flight requests finish, up to the deadline.
        notify(&[sd_notify::NotifyState::Stopping]);
        shutdown.cancel();
        tracker.close();
        let deadline = shared.load().config.server.shutdown_timeout.get();
        let (open, started) = (tracker.len(), std::time::Instant::now());
        tracing::info!(
            deadline_ms = deadline.as_millis() as u64,
            open,
            "draining connections"
        );
        let mut cut = 0;
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            cut = tracker.len();
            tracing::warn!(
                open = cut,
                "shutdown deadline passed; closing the remaining connections"
            );
        }
        // The last line: what the drain finished, so a log reader knows the stop was clean.
        tracing::info!(
            drained = open.saturating_sub(cut),
            cut,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stopped"
        );
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    let _ = sd_notify::notify(false, states);
}

#[cfg(unix)]
async fn wait_for_signals(
    shared: &SharedState,
    process: &Arc<Process>,
    config_path: Option<&std::path::Path>,
    shutdown: &CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        shutdown.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match config_path {
                Some(path) => reload(shared, process, path),
                None => tracing::warn!("SIGHUP ignored: this server has no config file to reload"),
            },
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); return }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); return }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Reads the config again and swaps the whole state. A config that does not load or build
/// leaves the running one in place.
pub(crate) fn reload(shared: &SharedState, process: &Arc<Process>, path: &std::path::Path) {
    notify(&[sd_notify::NotifyState::Reloading]);
    let result = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let running = shared.load();
            warn_restart_only(&running.config, &config);
            State::rebuild(config, &running).map_err(|e| e.to_string())
        });
    match result {
        Ok(state) => {
            shared.store(Arc::new(state));
            process.core.config_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(config = %path.display(), "configuration reloaded");
        }
        Err(e) => {
            process
                .core
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            tracing::error!(config = %path.display(), error = %e, "reload refused; the running configuration stays");
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Keys that only a restart applies: say so instead of silently ignoring them.
fn warn_restart_only(old: &Config, new: &Config) {
    let old_addrs: Vec<_> = old
        .server
        .listen
        .iter()
        .map(|l| (l.addr, l.tls.is_some()))
        .collect();
    let new_addrs: Vec<_> = new
        .server
        .listen
        .iter()
        .map(|l| (l.addr, l.tls.is_some()))
        .collect();
    if old_addrs != new_addrs {
        tracing::warn!("server.listen changed: listeners change only on restart");
    }
    if old.server.admin_addr != new.server.admin_addr {
        tracing::warn!("server.admin_addr changed: it changes only on restart");
    }
    if old.server.limits.max_connections != new.server.limits.max_connections {
        tracing::warn!("server.limits.max_connections changed: it changes only on restart");
    }
    if old.server.worker_threads != new.server.worker_threads {
        tracing::warn!("server.worker_threads changed: it changes only on restart");
    }
    // The event log's subscriber is installed once, at start.
    if old.log.level != new.log.level {
        tracing::warn!("log.level changed: it changes only on restart");
    }
    if old.log.format != new.log.format {
        tracing::warn!("log.format changed: it changes only on restart");
    }
}

async fn serve_admin(listener: TcpListener, shared: SharedState, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(admin = %addr, "admin listener (metrics, healthz, readyz)");
    }
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
            },
            _ = shutdown.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| admin::handle(shared.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Probes the upstream every `upstream.health_check.interval` for /readyz and the
/// moodle_edge_upstream_up gauge. Any answer below 500 counts: Moodle's front page may
/// redirect to the login page, and that is a live site.
async fn probe_upstream(shared: SharedState, shutdown: CancellationToken) {
    loop {
        let state = shared.load_full();
        let hc = state.config.upstream.health_check.clone();
        let host = url::Url::parse(&state.config.moodle.wwwroot)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_default();
        let outcome = match state.upstream.target().uri(&hc.path) {
            Ok(uri) => {
                let mut req = Request::get(uri)
                    .body(crate::body::empty())
                    .unwrap_or_default();
                if let Ok(v) = HeaderValue::from_str(&host) {
                    req.headers_mut().insert(HOST, v);
                }
                req.headers_mut()
                    .insert(USER_AGENT, HeaderValue::from_static("moodle-edge-health"));
                // The probe takes the same path as a page view, so it proves that path works
                // (and shares its pool rather than holding a connection of its own).
                let sent = state.upstream.probe(req.into_parts().0);
                match tokio::time::timeout(hc.timeout.get(), sent).await {
                    Ok(Ok(resp)) if resp.status().as_u16() < 500 => {
                        let _ = tokio::time::timeout(hc.timeout.get(), resp.into_body().collect())
                            .await;
                        Ok(())
                    }
                    Ok(Ok(resp)) => Err(format!(
                        "upstream answered {} to {}",
                        resp.status(),
                        hc.path
                    )),
                    Ok(Err(e)) => Err(format!("upstream probe failed: {e}")),
                    Err(_) => Err(format!(
                        "upstream probe got no answer within {:?}",
                        hc.timeout.get()
                    )),
                }
            }
            Err(e) => Err(format!("bad health path: {e}")),
        };
        let health = &state.process.upstream_health;
        match outcome {
            Ok(()) => {
                health.record_ok();
                state.process.core.upstream_up.set(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream health probe failed");
                health.record_error(e);
                state.process.core.upstream_up.set(0);
            }
        }
        drop(state);
        tokio::select! {
            _ = tokio::time::sleep(hc.interval.get()) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Periodic chores: idle direct-path connections the upstream closed are let go every 5 s (so
/// they do not sit in CLOSE_WAIT), idle rate-limit and breaker entries every minute.
async fn housekeeping(shared: SharedState, shutdown: CancellationToken) {
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                let state = shared.load();
                state.upstream.reap();
                ticks += 1;
                if ticks % 12 == 0 {
                    state.guard.housekeeping();
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Pings systemd's watchdog at half its interval while the runtime is responsive.
async fn watchdog(shutdown: CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    loop {
        notify(&[sd_notify::NotifyState::Watchdog]);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
