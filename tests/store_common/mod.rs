//! The store tests' redis-server (Debian's binary, with TLS, a password or persistence when asked) on a free loopback port: started, stopped,
//! restarted on the same port and data directory, frozen with SIGSTOP and thawed, always by its
//! PID. A missing redis-server fails the test: scripts/install-test-deps.sh installs it.
//!
//! Self-contained (std, tempfile), so any harness can mount it with
//! `#[path = "../store_common/mod.rs"] mod store_common;`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// Data directory (AOF, RDB) and config files; kept across restarts.
    pub dir: tempfile::TempDir,
    /// The arguments after `--port`, used again by `restart`.
    args: Vec<String>,
    /// Whether the server listens with TLS (then `cli` speaks TLS too).
    tls: Option<PathBuf>,
    password: Option<String>,
}

/// A free loopback port (bind :0, then drop).
pub fn redis_free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn poll(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Redis {
    /// Plain redis without persistence; `extra` are more `redis-server` arguments.
    pub fn start(extra: &[&str]) -> Redis {
        let mut args: Vec<String> = ["--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Redis::launch(args, None, None)
    }

    /// With the append-only file on (fsync always), so a restart keeps every write.
    pub fn start_persistent() -> Redis {
        let args = [
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Redis::launch(args, None, None)
    }

    /// Requiring a password for the default user.
    pub fn start_with_password(password: &str) -> Redis {
        let args = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Redis::launch(args, None, Some(password.to_string()))
    }

    /// TLS only (no plain port), with this certificate and key; clients are not asked for one.
    pub fn start_tls(cert: &Path, key: &Path, extra: &[&str]) -> Redis {
        let mut args: Vec<String> = vec![
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            cert.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Redis::launch(args, Some(cert.to_path_buf()), None)
    }

    fn launch(args: Vec<String>, tls: Option<PathBuf>, password: Option<String>) -> Redis {
        assert!(
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok(),
            "redis-server is not installed: run scripts/install-test-deps.sh"
        );
        let mut r = Redis {
            child: None,
            port: redis_free_port(),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            args,
            tls,
            password,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if self.tls.is_some() {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start redis-server: {e}")),
        );
        poll("redis-server to answer", Duration::from_secs(10), || {
            self.cli(&["ping"]).contains("PONG")
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `redis-cli` against this server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(p) = &self.password {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output().unwrap_or_else(|e| {
            panic!("redis-cli is not installed ({e}): run scripts/install-test-deps.sh")
        });
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM (redis flushes its append-only file and exits), then waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen server ignores SIGTERM until thawed.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops and starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGSTOP: the socket stays open, nothing answers.
    pub fn freeze(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status();
    }

    pub fn thaw(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
