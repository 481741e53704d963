//! The moodle-edge command: run the proxy, check a config, or start the demo.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use moodle_edge::internals::config::Config;
use moodle_edge::internals::observe::config::{LogConfig, LogFormat};
use moodle_edge::internals::observe::event_log::JsonLines;
use moodle_edge::internals::server::Server;
use moodle_edge::internals::state::State;

mod demo;

/// mimalloc instead of glibc malloc: the proxy allocates many small, short-lived buffers per
/// request (headers, frames), where glibc's malloc and free showed up at about 7% of the
/// proxy's CPU under load (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "moodle-edge",
    version,
    about = "A reverse proxy in front of a Moodle or Totara site"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file (for the default `run` command).
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/moodle-edge/config.yaml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Run,
    /// Validate a config file; exits non-zero naming each key that is wrong.
    Check {
        /// Also try what the site needs (upstream, dataroot, certificates) and print a
        /// checklist; exits 1 when a required check fails. Run it as the service user.
        #[arg(long)]
        online: bool,
        /// With --online: a certificate with fewer days left is a warning.
        #[arg(long, default_value_t = 14)]
        min_days: u32,
    },
    /// Start the proxy in front of an in-process stand-in Moodle site, on loopback.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the admin listener (metrics, health) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
    },
    /// MNet keys, peers and diagnostic calls (see docs/mnet.md).
    Mnet {
        #[command(subcommand)]
        command: moodle_edge::internals::mnet::cli::MnetCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { online, min_days } => check(&cli.config, online.then_some(min_days)),
        Command::Run => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("moodle-edge: {} is not valid:\n{e}", cli.config.display());
                    std::process::exit(2);
                }
            };
            init_logging(&config.log);
            let threads = config.server.worker_threads;
            let result = runtime(threads)?.block_on(run(config, Some(cli.config)));
            // Every request has ended with the runtime: write what the logs still hold.
            moodle_edge::internals::observe::sink::close_all(std::time::Duration::from_secs(5));
            result
        }
        Command::Mnet { command } => moodle_edge::internals::mnet::cli::run(command, &cli.config)
            .map_err(anyhow::Error::from),
        Command::Demo { listen, admin } => {
            init_logging(&LogConfig {
                format: LogFormat::Text,
                ..LogConfig::default()
            });
            runtime(0)?.block_on(demo::run(listen, admin))
        }
    }
}

fn check(path: &std::path::Path, online: Option<u32>) -> anyhow::Result<()> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{} is not valid:\n{e}", path.display());
            std::process::exit(2);
        }
    };
    if let Err(e) = State::dry_run(config.clone()) {
        eprintln!("{} is not valid:\n{e}", path.display());
        std::process::exit(2);
    }
    println!("{} is valid", path.display());
    let Some(min_days) = online else {
        return Ok(());
    };
    let report = runtime(1)?.block_on(moodle_edge::internals::check::run(
        &config,
        &moodle_edge::internals::check::Options { min_days },
    ));
    for line in &report.lines {
        println!("{line}");
    }
    if report.passed() {
        println!("online checks passed");
        Ok(())
    } else {
        println!(
            "online checks: {} required check(s) failed",
            report.failed()
        );
        std::process::exit(1);
    }
}

fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            b.worker_threads(worker_threads);
        }
        b
    };
    // File offload reads each chunk on the blocking pool; tokio's default of up to 512 such
    // threads costs memory (a stack and an allocator heap each) for no gain on 2-16 cores.
    builder
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let server = Server::bind(config, path).await.context("cannot start")?;
    server.serve().await;
    Ok(())
}

fn init_logging(cfg: &LogConfig) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("MOODLE_EDGE_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file or the journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stdout);
    match cfg.format {
        LogFormat::Json => builder.event_format(JsonLines).init(),
        LogFormat::Text => builder.init(),
    }
}
