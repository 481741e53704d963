//! The `moodle-edge mnet ...` subcommands: key import and generation (one truth for the site's
//! key pair), a diagnostic call to a peer, and the peer list. main.rs only dispatches here.

use crate::proxy::upstream::connector::{client_tls, web_roots};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use thiserror::Error;

use super::keys::{self, KeyError, KeyPair, Subject};
use super::metrics::MnetMetrics;
use super::xmlrpc::{MethodCall, MethodResponse, Value};
use super::{client, MnetState};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum MnetCommand {
    /// Import the site's key pair from Moodle's stored form (CERT@@@@@@@@KEY, the `mnet`
    /// plugin's `openssl` setting): `php admin/cli/cfg.php --component=mnet --name=openssl`.
    ImportKey {
        /// The file holding Moodle's value, or `-` for standard input.
        input: PathBuf,
        #[arg(long, default_value = "/etc/moodle-edge/mnet/site.pem")]
        cert_out: PathBuf,
        #[arg(long, default_value = "/etc/moodle-edge/mnet/site.key")]
        key_out: PathBuf,
        /// Where the pair being replaced goes (kept to open messages sealed to it).
        #[arg(long)]
        history_dir: Option<PathBuf>,
    },
    /// Make a new key pair shaped like Moodle's (rotation: the old pair goes to --history-dir).
    Keygen {
        /// The site's wwwroot (CN and subjectAltName of the certificate).
        #[arg(long)]
        wwwroot: String,
        /// The organisation (Moodle uses the site's full name).
        #[arg(long, default_value = "Moodle")]
        organization: String,
        #[arg(long, default_value = "NZ")]
        country: String,
        #[arg(long, default_value = "Wellington")]
        locality: String,
        #[arg(long)]
        email: Option<String>,
        /// Lifetime (Moodle's mnetkeylifetime, default 28 days).
        #[arg(long, default_value_t = 28)]
        days: u32,
        #[arg(long, default_value = "/etc/moodle-edge/mnet/site.pem")]
        cert_out: PathBuf,
        #[arg(long, default_value = "/etc/moodle-edge/mnet/site.key")]
        key_out: PathBuf,
        #[arg(long)]
        history_dir: Option<PathBuf>,
        /// Also write Moodle's stored form here, to give Moodle the same pair.
        #[arg(long)]
        moodle_out: Option<PathBuf>,
    },
    /// Sign, seal and send a call to a configured peer; print the decoded answer.
    Call {
        /// The peer's wwwroot, as configured.
        peer: String,
        /// e.g. system/listMethods
        method: String,
        /// Parameters: strings, or `int:N`, `bool:true|false`.
        args: Vec<String>,
        /// Send to this URL instead of the peer's /mnet/xmlrpc/server.php.
        #[arg(long)]
        url: Option<String>,
    },
    /// List the configured peers with their keys and expiry, and the site's own key.
    Peers {
        /// Also read each peer's last call from a running proxy's admin listener.
        #[arg(long)]
        admin: Option<String>,
    },
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Call(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs one subcommand; `config` is the --config path (for call and peers).
pub fn run(cmd: MnetCommand, config: &Path) -> Result<(), CliError> {
    match cmd {
        MnetCommand::ImportKey {
            input,
            cert_out,
            key_out,
            history_dir,
        } => {
            let text = if input.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(io(&input))?;
                s
            } else {
                std::fs::read_to_string(&input).map_err(io(&input))?
            };
            let pair = KeyPair::from_moodle(text.trim(), &input.display().to_string())?;
            install(&pair, &cert_out, &key_out, history_dir.as_deref())?;
            println!(
                "imported {} (expires in {} days)",
                pair.fingerprint,
                pair.days_left(super::now_unix())
            );
            Ok(())
        }
        MnetCommand::Keygen {
            wwwroot,
            organization,
            country,
            locality,
            email,
            days,
            cert_out,
            key_out,
            history_dir,
            moodle_out,
        } => {
            let host = url::Url::parse(&wwwroot)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .ok_or_else(|| CliError::Usage(format!("--wwwroot {wwwroot:?} is not a URL")))?;
            let email = email.unwrap_or_else(|| format!("noreply@{host}"));
            let pair = keys::generate(
                &Subject {
                    wwwroot: &wwwroot,
                    organization: &organization,
                    country: &country,
                    locality: &locality,
                    email: &email,
                },
                days,
            )?;
            install(&pair, &cert_out, &key_out, history_dir.as_deref())?;
            if let Some(out) = moodle_out {
                write_private(&out, &pair.to_moodle()?)?;
            }
            println!("generated {} ({days} days)", pair.fingerprint);
            Ok(())
        }
        MnetCommand::Call {
            peer,
            method,
            args,
            url,
        } => call(config, &peer, &method, &args, url),
        MnetCommand::Peers { admin } => peers(config, admin),
    }
}

/// Writes the pair, first moving the pair it replaces into the history folder.
fn install(
    pair: &KeyPair,
    cert_out: &Path,
    key_out: &Path,
    history: Option<&Path>,
) -> Result<(), CliError> {
    if let (Some(dir), true) = (history, cert_out.exists() && key_out.exists()) {
        let old = keys::load_pair(cert_out, key_out)?;
        if old.fingerprint != pair.fingerprint {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let file = dir.join(format!("{}.pem", &old.fingerprint[..16]));
            write_private(&file, &old.to_moodle()?)?;
        }
    }
    std::fs::write(cert_out, &pair.cert_pem).map_err(io(cert_out))?;
    write_private(key_out, &pair.key_pem()?)
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))
}

fn load_state(config: &Path) -> Result<MnetState, CliError> {
    let cfg = Config::load(config)
        .map_err(|e| CliError::Usage(format!("{} is not valid:\n{e}", config.display())))?;
    let mnet = cfg
        .mnet
        .as_ref()
        .ok_or_else(|| CliError::Usage(format!("{} has no mnet: section", config.display())))?;
    let metrics = MnetMetrics::register(&prometheus::Registry::new())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    MnetState::build(mnet, &cfg.moodle.wwwroot, Arc::new(metrics))
        .map_err(|e| CliError::Usage(e.to_string()))
}

fn parse_arg(arg: &str) -> Value {
    if let Some(n) = arg.strip_prefix("int:").and_then(|n| n.parse().ok()) {
        return Value::Int(n);
    }
    match arg {
        "bool:true" => Value::Bool(true),
        "bool:false" => Value::Bool(false),
        s => Value::String(s.to_string()),
    }
}

fn call(
    config: &Path,
    peer: &str,
    method: &str,
    args: &[String],
    url: Option<String>,
) -> Result<(), CliError> {
    let state = load_state(config)?;
    let peer = state
        .peers
        .get(peer)
        .ok_or_else(|| CliError::Usage(format!("{peer} is not a configured peer")))?
        .clone();
    let call = MethodCall {
        method: method.to_string(),
        params: args.iter().map(|a| parse_arg(a)).collect(),
    };
    let body = client::seal_call(&state, &peer, &call, super::now_unix())
        .map_err(|e| CliError::Call(e.to_string()))?;
    let url = url.unwrap_or_else(|| format!("{}{}", peer.wwwroot, crate::route::MNET_PATH));
    let (status, answer) = post(&url, body)?;
    let answer = client::open_answer(&state, &peer, &answer)
        .map_err(|e| CliError::Call(format!("HTTP {status}: {e}")))?;
    if let Some(ts) = answer.timestamp {
        let ahead = ts - super::now_unix();
        if ahead > 15 {
            eprintln!("warning: the answer's timestamp is {ahead} s ahead of this clock (Moodle refuses more than 15 s)");
        }
    }
    if answer.old_key {
        eprintln!("warning: the peer sealed its answer to an earlier key of ours");
    }
    match answer.response {
        MethodResponse::Value(v) => {
            println!("{v}");
            Ok(())
        }
        MethodResponse::Fault { code, string } => {
            Err(CliError::Call(format!("fault {code}: {string}")))
        }
    }
}

/// One POST with a short-lived runtime (the CLI is not the proxy).
fn post(url: &str, body: String) -> Result<(http::StatusCode, Vec<u8>), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::Call(format!("{url}: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&e))?;
    rt.block_on(async {
        let tls = client_tls(web_roots()).map_err(|e| fail(&e))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<bytes::Bytes>>(https);
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "text/xml")
            .header(http::header::USER_AGENT, "Moodle")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| fail(&e))?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(60), client.request(req))
            .await
            .map_err(|_| fail(&"no answer within 60 s"))?
            .map_err(|e| fail(&e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(&e))?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    })
}

fn peers(config: &Path, admin: Option<String>) -> Result<(), CliError> {
    let state = load_state(config)?;
    let now = super::now_unix();
    let last_calls = admin.map(|a| last_calls(&a)).unwrap_or_default();
    println!(
        "site {}  key {}  expires in {} days",
        state.site_wwwroot,
        &state.current.fingerprint[..16],
        state.current.days_left(now)
    );
    for old in &state.history {
        println!(
            "  earlier key {}  expires in {} days",
            &old.fingerprint[..16],
            old.days_left(now)
        );
    }
    for p in state.peers.iter() {
        let last = last_calls
            .iter()
            .find(|(w, _)| *w == p.wwwroot)
            .map(|(_, t)| format!("{} s ago", now - t))
            .unwrap_or_else(|| "never seen".into());
        println!(
            "peer {}  key {}  expires in {} days  last call {}  allow [{}]  networks [{}]",
            p.wwwroot,
            &p.cert.load().fingerprint[..16],
            (p.cert.load().not_after - now).div_euclid(86_400),
            last,
            p.allow.join(", "),
            p.networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    Ok(())
}

/// (peer, unix time) from a proxy's /metrics (empty when it cannot be read).
fn last_calls(admin: &str) -> Vec<(String, i64)> {
    let url = if admin.starts_with("http") {
        format!("{admin}/metrics")
    } else {
        format!("http://{admin}/metrics")
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return Vec::new(),
    };
    let text = rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = url.parse().ok()?;
        let resp = client.get(uri).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    });
    let prefix = "moodle_edge_mnet_peer_last_call_timestamp_seconds{peer=\"";
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (peer, value) = rest.split_once("\"} ")?;
            Some((peer.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
