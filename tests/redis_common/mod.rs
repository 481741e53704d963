//! A redis-server (Debian's) of the test's own on a free loopback port: started, stopped,
//! restarted on the same port, frozen (SIGSTOP) and thawed (SIGCONT), always by its PID, and
//! killed on drop. A missing redis-server fails the test: scripts/install-test-deps.sh
//! installs it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Where redis-server may write (it writes nothing with persistence off).
    dir: tempfile::TempDir,
    /// Whether the process is stopped by SIGSTOP (thawed before it is killed).
    frozen: bool,
}

impl RedisServer {
    pub fn start(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            frozen: false,
        };
        server.launch();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/install-test-deps.sh");
        self.child = Some(child);
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["ping"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, by PID): connections drop at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.frozen {
                self.signal("CONT", child.id());
                self.frozen = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        // redis-server binds with SO_REUSEADDR: the port is free once the old one is reaped.
        self.launch();
    }

    /// SIGSTOP: the server holds its connections but answers nothing.
    pub fn freeze(&mut self) {
        let pid = self.child.as_ref().expect("running").id();
        self.signal("STOP", pid);
        self.frozen = true;
    }

    /// SIGCONT: it answers again, queued commands first.
    pub fn thaw(&mut self) {
        let pid = self.child.as_ref().expect("running").id();
        self.signal("CONT", pid);
        self.frozen = false;
    }

    fn signal(&self, sig: &str, pid: u32) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// redis-cli against this server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is not installed: run scripts/install-test-deps.sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
