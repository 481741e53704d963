//! The "hyper floor" for `bench/load.sh EDGE=hyper-floor`: the smallest reverse proxy that can
//! be built on the same stack as moodle-edge (tokio current-thread runtime, hyper-util's auto
//! h1/h2 server, its pooled legacy client, tokio-rustls with ALPN) and nothing else: no header
//! rules, no timeouts, no metrics, no logs. Its figures beside nginx show how much of any gap is
//! the stack's and how much is moodle-edge's own work. Not a product: never deploy it.
//!
//! With `DIRECT=1` in the environment, requests without a body go upstream over moodle-edge's
//! direct path (`moodle_edge::internals::proxy::upstream::direct`) instead of hyper's pooled client: the floor of
//! the stack moodle-edge actually uses (`bench/load.sh EDGE=direct-floor`).
//!
//!     cargo run --release --example hyper_floor -- HTTP_ADDR TLS_ADDR CERT KEY UPSTREAM_URL

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use moodle_edge::internals::body::ProxyBody;
use moodle_edge::internals::proxy::upstream::direct::DirectPool;

type Pool = Client<HttpConnector, ProxyBody>;

/// The same allocator as the moodle-edge binary, so the comparison is of the code alone.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn forward(
    client: Pool,
    direct: Option<Arc<DirectPool>>,
    upstream: Uri,
    mut req: Request<Incoming>,
) -> Result<hyper::Response<ProxyBody>, Infallible> {
    if let Some(direct) = direct {
        use http_body::Body as _;
        if req.body().is_end_stream() {
            let (parts, _) = req.into_parts();
            return Ok(
                match direct.send(&parts, None, std::time::Instant::now()).await {
                    Ok(resp) => resp.map(moodle_edge::internals::body::boxed),
                    Err(_) => {
                        let mut r = hyper::Response::new(moodle_edge::internals::body::empty());
                        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                        r
                    }
                },
            );
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = format!("{}{}", upstream.to_string().trim_end_matches('/'), path);
    *req.uri_mut() = uri.parse().unwrap_or_default();
    *req.version_mut() = http::Version::HTTP_11;
    let req = req.map(moodle_edge::internals::body::boxed);
    Ok(match client.request(req).await {
        Ok(resp) => resp.map(moodle_edge::internals::body::boxed),
        Err(_) => {
            let mut r = hyper::Response::new(moodle_edge::internals::body::empty());
            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
            r
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, http_addr, tls_addr, cert, key, upstream] = &args[..] else {
        eprintln!("usage: hyper_floor HTTP_ADDR TLS_ADDR CERT KEY UPSTREAM_URL");
        std::process::exit(2);
    };
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).expect("cert").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert pem");
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).expect("key").as_slice())
        .expect("key pem")
        .expect("a key");
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("tls config");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let upstream: Uri = upstream.parse().expect("upstream url");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Pool = Client::builder(TokioExecutor::new()).build(http);
        // DIRECT=1: bodiless requests take moodle-edge's direct upstream path instead.
        let direct = std::env::var_os("DIRECT").map(|_| {
            Arc::new(DirectPool::new(
                upstream.authority().expect("upstream authority"),
                256,
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(5),
                None,
            ))
        });
        let plain = tokio::net::TcpListener::bind(http_addr.as_str())
            .await
            .expect("bind http");
        let secure = tokio::net::TcpListener::bind(tls_addr.as_str())
            .await
            .expect("bind tls");
        loop {
            let (stream, is_tls) = tokio::select! {
                Ok((s, _)) = plain.accept() => (s, false),
                Ok((s, _)) = secure.accept() => (s, true),
            };
            let _ = stream.set_nodelay(true);
            let (client, upstream, acceptor) = (client.clone(), upstream.clone(), acceptor.clone());
            let direct = direct.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    forward(client.clone(), direct.clone(), upstream.clone(), req)
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                if is_tls {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                } else {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            });
        }
    });
}
