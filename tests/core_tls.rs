//! TLS and HTTP/2 on the public listeners: h2c with prior knowledge, ALPN h2 and http/1.1, TLS
//! 1.2 and 1.3, certificates chosen by SNI, the https redirect and failed-handshake metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use serde_json::{json, Value};

/// The test proxy: [plain (h2c), TLS with certs A (a.test) then B (b.test), plain redirect].
struct TlsSetup {
    up: Upstream,
    proxy: Proxy,
    der_a: Vec<u8>,
    der_b: Vec<u8>,
}

impl TlsSetup {
    fn start() -> TlsSetup {
        let up = Upstream::start();
        let mut ders = (Vec::new(), Vec::new());
        let proxy = Proxy::start(&up.url(), |c, dir: &Path| {
            let (a_crt, a_key, der_a) = write_cert(dir, "a", &["a.test"]);
            let (b_crt, b_key, der_b) = write_cert(dir, "b", &["b.test", "www.b.test"]);
            ders = (der_a, der_b);
            let plain = c["server"]["listen"][0].clone();
            c["server"]["listen"] = json!([
                plain,
                {
                    "addr": format!("127.0.0.1:{}", free_port()),
                    "tls": { "certificates": [
                        { "cert_file": a_crt, "key_file": a_key },
                        { "cert_file": b_crt, "key_file": b_key },
                    ]},
                },
                {
                    "addr": format!("127.0.0.1:{}", free_port()),
                    "redirect_to_https": true,
                    "https_port": 8443,
                },
            ]);
        });
        TlsSetup {
            up,
            proxy,
            der_a: ders.0,
            der_b: ders.1,
        }
    }

    fn plain(&self) -> SocketAddr {
        self.proxy.addrs[0]
    }
    fn tls(&self) -> SocketAddr {
        self.proxy.addrs[1]
    }
    fn redirect(&self) -> SocketAddr {
        self.proxy.addrs[2]
    }
}

/// Accepts any server certificate (the tests compare the presented DER themselves) but still
/// checks the handshake signatures.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

fn presented_cert(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// GET `path` over an established connection in the protocol ALPN chose; (version, echo).
async fn get_over(tls: Tls, host: &str, path: &str) -> (Version, u16, Value) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://{host}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap()
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (version, status, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works_on_a_plain_listener() {
    let s = TlsSetup::start();
    let http = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = http
        .post(format!("http://{}/h2c?x=1", s.plain()))
        .body("hello h2c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let echo: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    // The upstream always gets HTTP/1.1, with :authority as Host.
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["uri"], "/h2c?x=1");
    assert_eq!(echo["body_len"], 9);
    assert_eq!(echo_header(&echo, "host"), Some(s.plain().to_string()));
    // HTTP/1.1 still works on the same listener.
    assert_eq!(get(s.plain(), "/h1", "").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_and_http11_over_tls() {
    let s = TlsSetup::start();
    let all = rustls::ALL_VERSIONS;

    let tls = tls_connect(s.tls(), "a.test", all, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, status, echo) = get_over(tls, "a.test", "/alpn-h2").await;
    assert_eq!((version, status), (Version::HTTP_2, 200));
    assert_eq!(
        echo_header(&echo, "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(echo_header(&echo, "host").as_deref(), Some("a.test"));

    let tls = tls_connect(s.tls(), "a.test", all, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (version, status, echo) = get_over(tls, "a.test", "/alpn-h1").await;
    assert_eq!((version, status), (Version::HTTP_11, 200));
    assert_eq!(
        echo_header(&echo, "x-forwarded-proto").as_deref(),
        Some("https")
    );

    // No ALPN at all: HTTP/1.1.
    let tls = tls_connect(s.tls(), "a.test", all, &[]).await;
    let (version, status, _) = get_over(tls, "a.test", "/no-alpn").await;
    assert_eq!((version, status), (Version::HTTP_11, 200));
    assert_eq!(s.up.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_work() {
    let s = TlsSetup::start();
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let tls = tls_connect(s.tls(), "a.test", &[version], &[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        let (_, status, _) = get_over(tls, "a.test", "/tls-version").await;
        assert_eq!(status, 200, "{expected:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_chosen_by_sni() {
    let s = TlsSetup::start();
    let all = rustls::ALL_VERSIONS;
    let cases = [
        ("b.test", &s.der_b, "B by name"),
        ("www.b.test", &s.der_b, "B by its second name"),
        ("a.test", &s.der_a, "A by name"),
        ("B.TEST", &s.der_b, "names are case-insensitive"),
        ("unknown.test", &s.der_a, "an unknown name gets the first"),
        ("127.0.0.1", &s.der_a, "no SNI (IP address) gets the first"),
    ];
    for (sni, want, why) in cases {
        let tls = tls_connect(s.tls(), sni, all, &[b"http/1.1"]).await;
        assert!(
            &presented_cert(&tls) == want,
            "{why}: wrong certificate for SNI {sni}"
        );
    }
    // And the connection serves after SNI B.
    let tls = tls_connect(s.tls(), "b.test", all, &[b"h2"]).await;
    let (_, status, echo) = get_over(tls, "b.test", "/sni-b").await;
    assert_eq!(status, 200);
    assert_eq!(echo_header(&echo, "host").as_deref(), Some("b.test"));
}

#[test]
fn redirect_to_https_gives_308_with_path_and_query() {
    let s = TlsSetup::start();
    let resp = get(s.redirect(), "/course/view.php?id=2&section=3", "");
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some("https://lms.test:8443/course/view.php?id=2&section=3")
    );
    let resp = roundtrip(
        s.redirect(),
        b"GET /login/index.php HTTP/1.1\r\nHost: lms.test:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some("https://lms.test:8443/login/index.php")
    );
    assert!(s.up.seen().is_empty(), "{:?}", s.up.seen());
}

#[test]
fn garbage_on_the_tls_port_counts_a_handshake_failure() {
    let s = TlsSetup::start();
    let series = format!(
        "moodle_edge_tls_handshake_failures_total{{listener=\"{}\"}}",
        s.tls()
    );
    let before = s.proxy.metric(&series).unwrap_or(0.0);
    let mut raw = Raw::connect(s.tls()).unwrap();
    raw.send(b"GET / HTTP/1.1\r\nHost: lms.test\r\n\r\n")
        .unwrap();
    assert!(raw.closed_within(Duration::from_secs(5)));
    wait_for(
        "the handshake failure to be counted",
        Duration::from_secs(5),
        || s.proxy.metric(&series).unwrap_or(0.0) >= before + 1.0,
    );
    assert!(s.up.seen().is_empty());
}

/// A TLS stand-in upstream (the shared stand-in server behind TLS): answers every request with `tls-upstream` and the
/// Host it saw. Returns it and the CA (its own self-signed certificate) to trust.
fn tls_upstream(dir: &Path) -> (StandinServer, std::path::PathBuf) {
    let (crt, key, _) = write_cert(dir, "upstream", &["127.0.0.1", "localhost"]);
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut std::fs::read(&crt).unwrap().as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(&key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let server = StandinServer::start_tls(
        1,
        acceptor,
        |req: Request<hyper::body::Incoming>, _| async move {
            let host = req
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                Bytes::from(format!("tls-upstream {host}")),
            )))
        },
    );
    (server, crt)
}

#[test]
fn an_https_upstream_is_verified_against_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, ca) = tls_upstream(dir.path());
    let port = upstream.addr.port();
    let url = format!("https://127.0.0.1:{port}");
    let proxy = Proxy::start(&url, |c, _| {
        c["upstream"]["ca_file"] = json!(ca);
    });
    let r = get(proxy.addr(), "/course/view.php", "");
    assert_eq!(r.status, 200, "{}", proxy.output());
    assert_eq!(
        r.text(),
        "tls-upstream lms.test",
        "Host is the client's, over TLS too"
    );

    // Without the CA the upstream's certificate is not trusted: 502, never a plain fallback.
    let untrusted = Proxy::start(&url, |_, _| {});
    let r = get(untrusted.addr(), "/course/view.php", "");
    assert_eq!(r.status, 502);
}
