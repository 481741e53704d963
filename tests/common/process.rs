//! The real `moodle-edge` binary as a child process: its config written into a temp dir,
//! stdout and stderr captured to files there, killed by PID (SIGKILL) and reaped on drop.
//!
//! Needs [`super::util`]: mount it next to `util.rs`, e.g.
//! `#[path = "../common/util.rs"] mod util;` and `#[path = "../common/process.rs"] mod process;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::util::wait_for;

pub const BIN: &str = env!("CARGO_BIN_EXE_moodle-edge");

/// A running (or exited) `moodle-edge`.
pub struct EdgeProcess {
    child: Child,
    pub dir: TempDir,
    pub config_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl EdgeProcess {
    /// Writes `config` (YAML, or JSON, which is YAML) as `config.yaml` into `dir` and runs
    /// `prefix... bin run --config config.yaml`, with stdout and stderr going to `stdout.log` and
    /// `stderr.log` in `dir`. Does not wait for anything.
    pub fn spawn(dir: TempDir, bin: &str, config: &str, prefix: &[&str]) -> EdgeProcess {
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("MOODLE_EDGE_LOG")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().expect("spawn moodle-edge");
        EdgeProcess {
            child,
            dir,
            config_path,
            exited: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A file in the temp dir, empty when absent.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        self.read("stdout.log")
    }

    pub fn stderr(&self) -> String {
        self.read("stderr.log")
    }

    /// stdout and stderr, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_for("moodle-edge to exit", timeout, || {
            status = self.try_exit();
            status.is_some()
        });
        status.unwrap()
    }

    /// Panics with the output when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!("moodle-edge exited early ({status}).\n{}", self.output());
        }
    }

    /// Waits until stdout names every address in `wanted` (the "listening" lines: every socket
    /// is bound before they are written, so no probe connection is needed).
    pub fn wait_listening(&mut self, wanted: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if wanted.iter().all(|w| out.contains(w.as_str())) {
                return;
            }
            self.assert_running();
            if Instant::now() > deadline {
                panic!("moodle-edge did not start listening.\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `kill -SIG` to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGTERM, then SIGKILL when still running after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if self.try_exit().is_none() {
            terminate(&mut self.child, grace);
        }
    }

    /// VmRSS of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        super::util::rss_kib(self.pid())
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops `child` by PID: SIGTERM (through kill(1), so no `unsafe`), up to `grace` to exit, then
/// SIGKILL; always reaped.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `Deref`/`DerefMut` from a harness's wrapper (its own config, addresses, client) to the
/// [`EdgeProcess`] field it runs: `deref_to_process!(Proxy, process);`.
macro_rules! deref_to_process {
    ($wrapper:ty, $field:ident) => {
        impl std::ops::Deref for $wrapper {
            type Target = EdgeProcess;
            fn deref(&self) -> &EdgeProcess {
                &self.$field
            }
        }

        impl std::ops::DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut EdgeProcess {
                &mut self.$field
            }
        }
    };
}
pub(crate) use deref_to_process;
