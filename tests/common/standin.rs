//! The one HTTP server every harness builds its stand-in upstream on: hyper's HTTP/1.1 server
//! (upgrades allowed) on a free 127.0.0.1 port, plain or behind TLS, on a runtime of its own,
//! counting connections. A harness supplies only the handler, so the accept loop, the runtime and
//! the shutdown exist once. Dropping the server stops its runtime without waiting for handlers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection counts the tests read (pooling, and letting go of upstream connections).
#[derive(Default)]
pub struct Connections {
    /// Accepted so far.
    pub accepted: AtomicU64,
    /// Accepted and not yet closed.
    pub open: AtomicI64,
}

pub struct StandinServer {
    pub addr: SocketAddr,
    pub connections: Arc<Connections>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StandinServer {
    /// A plain HTTP stand-in on `threads` runtime threads. `handler` gets each request and the
    /// number of the connection it came on (1 for the first).
    pub fn start<H, F, B, E>(threads: usize, handler: H) -> StandinServer
    where
        H: Fn(Request<Incoming>, u64) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        StandinServer::spawn(threads, None, handler)
    }

    /// The same behind TLS: the harness builds the acceptor from its own certificate.
    pub fn start_tls<H, F, B, E>(
        threads: usize,
        acceptor: tokio_rustls::TlsAcceptor,
        handler: H,
    ) -> StandinServer
    where
        H: Fn(Request<Incoming>, u64) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        StandinServer::spawn(threads, Some(acceptor), handler)
    }

    fn spawn<H, F, B, E>(
        threads: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: H,
    ) -> StandinServer
    where
        H: Fn(Request<Incoming>, u64) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let connections = Arc::new(Connections::default());
        let counts = connections.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let id = counts.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                counts.open.fetch_add(1, Ordering::SeqCst);
                let (counts, handler, tls) = (counts.clone(), handler.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| handler(req, id));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(TokioIo::new(tcp), service)
                                .with_upgrades()
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    }
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        StandinServer {
            addr,
            connections,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accepted(&self) -> u64 {
        self.connections.accepted.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> i64 {
        self.connections.open.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every connection now (tests of an upstream going away).
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for StandinServer {
    fn drop(&mut self) {
        self.stop();
    }
}
