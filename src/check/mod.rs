//! `moodle-edge check --online`: with the config loaded, try what the site will need and print
//! one verdict per line, beyond what a syntax check (`nginx -t`) can tell.
//!
//! Order: who runs the checks (readability is that user's), the upstream (does it answer, which
//! Moodle), the files the proxy serves from (dataroot, offload roots), the TLS certificates
//! (the site's names, time left). Single sign-on and MNet checks (the auth_userkey token and
//! its function, identity-provider metadata, MNet peer certificates) join [`run`] when those
//! stages are built; until then nothing is printed for them.

mod certs;
mod client;
mod files;
mod upstream;

use std::fmt;

use crate::config::Config;

/// How one line came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but worth a look (a certificate close to expiry, a dataroot without filedir/).
    Warn,
    /// The site will not work as configured: `check --online` exits non-zero.
    Fail,
}

/// One checklist line.
#[derive(Debug, Clone)]
pub struct Line {
    pub verdict: Verdict,
    /// What was checked, e.g. `upstream` or `dataroot`.
    pub what: String,
    /// What was found, in a sentence.
    pub detail: String,
}

impl Line {
    fn new(verdict: Verdict, what: impl Into<String>, detail: impl Into<String>) -> Line {
        Line {
            verdict,
            what: what.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{tag}  {}: {}", self.what, self.detail)
    }
}

/// Settings of the online check itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// A certificate with fewer days left than this is a warning.
    pub min_days: u32,
}

/// The checklist, in the order it was run.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    /// Whether every required check passed.
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.verdict != Verdict::Fail)
    }

    pub fn failed(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.verdict == Verdict::Fail)
            .count()
    }
}

/// Runs every online check against `config` (already loaded and checked).
pub async fn run(config: &Config, options: &Options) -> Report {
    let mut report = Report::default();
    report.lines.push(files::who());
    report.lines.extend(upstream::check(config).await);
    report.lines.extend(files::check(config));
    report.lines.extend(certs::check(config, options.min_days));
    report
}
