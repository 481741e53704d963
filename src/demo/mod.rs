//! `moodle-edge demo`: the proxy in front of an in-process stand-in Moodle on loopback, so a
//! newcomer can see pages, an offloaded file and a guarded web service without a Moodle.
//!
//! The stand-in behaves like Moodle where the proxy can tell: pluginfile.php answers with an
//! empty body and a whole-value rawurlencoded X-Accel-Redirect, the web service answers errors
//! as HTTP 200 with Moodle's JSON exception shape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha1::{Digest, Sha1};
use tokio::net::TcpListener;

use moodle_edge::internals::config::Config;
use moodle_edge::internals::server::{Server, ServerError};

/// The token the stand-in accepts; any other gets Moodle's invalidtoken error.
pub const DEMO_TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Site {
    /// The sha1 content hash of the demo file, as Moodle names files in filedir.
    welcome_hash: String,
    big_hash: String,
}

pub async fn run(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    // Removed when this function returns, however it returns (a port in use included).
    let tmp = tempfile::Builder::new()
        .prefix("moodle-edge-demo-")
        .tempdir()
        .context("cannot create the demo moodledata")?;
    let dataroot = tmp.path().to_path_buf();
    let site =
        std::sync::Arc::new(make_dataroot(&dataroot).context("cannot create the demo moodledata")?);

    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the stand-in site")?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(serve_standin(upstream, site.clone()));

    let yaml = include_str!("demo.yaml")
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{UPSTREAM}", &upstream_addr.to_string())
        .replace("{DATAROOT}", &dataroot.display().to_string());
    let config = Config::parse(&yaml).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    config
        .check()
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let server = Server::bind(config, None).await.map_err(name_the_flag)?;
    let base = format!(
        "http://{}",
        server.local_addrs().first().copied().unwrap_or(listen)
    );
    let admin = server.admin_addr().unwrap_or(admin);
    let file = format!("{base}/pluginfile.php/1/mod_resource/content/0/welcome.txt");
    let big = format!("{base}/pluginfile.php/1/mod_resource/content/0/video.bin");
    let ws = format!(
        "{base}/webservice/rest/server.php?wstoken={DEMO_TOKEN}&wsfunction=core_webservice_get_site_info&moodlewsrestformat=json"
    );
    println!(
        "\nmoodle-edge demo: the proxy at {base} stands in front of a stand-in Moodle at http://{upstream_addr}\n\
         moodledata (temporary): {data}\n\n\
         Try:\n\
         \x20 curl -i {base}/                               a page, forwarded with X-Forwarded-*\n\
         \x20 curl -i {file}\n\
         \x20                                                 a file offloaded from moodledata (X-Accel-Redirect)\n\
         \x20 curl -i -H 'Range: bytes=0-99' {big}\n\
         \x20                                                 a byte range of an 8 MiB file\n\
         \x20 curl -i '{ws}'\n\
         \x20                                                 a web-service call (30/min, burst 5 per token: repeat it)\n\
         \x20 curl -i {base}/moodledata-internal/filedir/    the internal prefix: always 404\n\
         \x20 curl -s http://{admin}/metrics | grep moodle_edge_\n\
         \x20 curl -i http://{admin}/readyz\n\n\
         Press Ctrl-C to stop.\n",
        data = dataroot.display(),
    );
    server.serve().await;
    drop(tmp);
    Ok(())
}

/// The demo's addresses come from its flags, not from a config file: say which flag.
fn name_the_flag(e: ServerError) -> anyhow::Error {
    match e {
        ServerError::Bind { key, addr, source } => {
            let flag = if key == "server.admin_addr" {
                "--admin"
            } else {
                "--listen"
            };
            anyhow::anyhow!("cannot listen on {addr} (given by {flag}): {source}; choose another address with {flag}")
        }
        other => anyhow::Error::new(other).context("cannot start the proxy"),
    }
}

/// Writes two files into a Moodle-shaped filedir (filedir/AB/CD/ABCD...).
fn make_dataroot(root: &Path) -> std::io::Result<Site> {
    std::fs::create_dir_all(root)?;
    let welcome =
        b"Hello from moodledata. This file was streamed by moodle-edge, not by PHP.\n".to_vec();
    let mut big = Vec::with_capacity(8 << 20);
    for i in 0..(8u32 << 20) / 4 {
        big.extend_from_slice(&i.to_be_bytes());
    }
    Ok(Site {
        welcome_hash: store(root, &welcome)?,
        big_hash: store(root, &big)?,
    })
}

fn store(root: &Path, content: &[u8]) -> std::io::Result<String> {
    let hash = hex::encode(Sha1::digest(content));
    let dir: PathBuf = root.join("filedir").join(&hash[0..2]).join(&hash[2..4]);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(&hash), content)?;
    Ok(hash)
}

async fn serve_standin(listener: TcpListener, site: std::sync::Arc<Site>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let site = site.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| standin(site.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn standin(
    site: std::sync::Arc<Site>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let forwarded = format!(
        "X-Forwarded-For: {}\nX-Forwarded-Proto: {}\nX-Forwarded-Host: {}\nX-Request-Id: {}\n",
        header(&req, "x-forwarded-for"),
        header(&req, "x-forwarded-proto"),
        header(&req, "x-forwarded-host"),
        header(&req, "x-request-id"),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let response = if path == "/" {
        reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!("<!DOCTYPE html><html><body><h1>Stand-in Moodle</h1><p>What the site saw:</p><pre>{forwarded}</pre></body></html>\n"),
        )
    } else if let Some(name) = path.strip_prefix("/pluginfile.php/1/mod_resource/content/0/") {
        let (hash, content_type) = match name {
            "welcome.txt" => (&site.welcome_hash, "text/plain"),
            "video.bin" => (&site.big_hash, "application/octet-stream"),
            _ => {
                return Ok(reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "Sorry, the requested file could not be found\n",
                ))
            }
        };
        // Exactly what lib/xsendfilelib.php sends: the whole value rawurlencoded, no body.
        let internal = format!(
            "/moodledata-internal/filedir/{}/{}/{}",
            &hash[0..2],
            &hash[2..4],
            hash
        );
        let encoded =
            percent_encoding::utf8_percent_encode(&internal, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let mut r = reply(StatusCode::OK, content_type, Bytes::new());
        let h = r.headers_mut();
        for (k, v) in [
            ("x-accel-redirect", encoded),
            (
                "content-disposition",
                format!("inline; filename=\"{name}\""),
            ),
            (
                "cache-control",
                "public, max-age=86400, no-transform".into(),
            ),
            ("etag", format!("\"{hash}\"")),
            ("accept-ranges", "bytes".into()),
        ] {
            if let Ok(v) = v.parse() {
                h.insert(k, v);
            }
        }
        r
    } else if path == "/webservice/rest/server.php" {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .chain(url::form_urlencoded::parse(&body))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| {
            params
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let json = if get("wstoken").as_deref() != Some(DEMO_TOKEN) {
            serde_json::json!({"exception": "moodle_exception", "errorcode": "invalidtoken", "message": "Invalid token - token not found"})
        } else if get("wsfunction").as_deref() == Some("core_webservice_get_site_info") {
            serde_json::json!({"sitename": "Stand-in Moodle", "username": "demo", "release": "4.5 (Build: 20241007)", "version": 2024100700})
        } else {
            serde_json::json!({"exception": "dml_missing_record_exception", "errorcode": "invalidrecord", "message": "Can't find data record in database table external_functions."})
        };
        reply(StatusCode::OK, "application/json", json.to_string())
    } else {
        reply(
            StatusCode::NOT_FOUND,
            "text/html",
            "<h1>Not found on the stand-in site</h1>\n",
        )
    };
    Ok(response)
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}
