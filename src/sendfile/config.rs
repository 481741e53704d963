//! `sendfile:` — which X-Accel-Redirect URIs and X-Sendfile paths the proxy answers from disk.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendfileConfig {
    /// An X-Accel-Redirect URI under `prefix` is the file under `root`.
    #[serde(default)]
    pub mappings: Vec<Mapping>,
    /// An X-Sendfile path must lie under one of these directories.
    #[serde(default)]
    pub sendfile_roots: Vec<PathBuf>,
    #[serde(default)]
    pub symlinks: SymlinkPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub prefix: String,
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SymlinkPolicy {
    /// Refuse any path with a symlink in it.
    Deny,
    /// Follow symlinks only while the resolved file stays under the root.
    #[default]
    WithinRoot,
    /// Follow symlinks anywhere (nginx's default).
    Follow,
}
