//! Who the checks run as, and whether that user can read the directories the proxy serves
//! files from: the dataroot and every offload root.

use std::path::Path;

use super::{Line, Verdict};
use crate::config::Config;

/// The user running the checks: file readability is that user's.
pub(super) fn who() -> Line {
    let uid = current_uid();
    let name = uid.and_then(user_name);
    let label = match (&name, uid) {
        (Some(n), Some(u)) => format!("{n} (uid {u})"),
        (None, Some(u)) => format!("uid {u}"),
        _ => "an unknown user".to_string(),
    };
    if uid == Some(0) {
        Line::new(
            Verdict::Warn,
            "user",
            "running as root, which can read every file; to see what the service can read, run \
             it as the service user: runuser -u moodle-edge -- moodle-edge check --online \
             (add -G GROUP for each SupplementaryGroups= of the unit)",
        )
    } else {
        Line::new(
            Verdict::Ok,
            "user",
            format!("checks run as {label}; readability below is this user's"),
        )
    }
}

/// The real uid, from /proc (no unsafe libc call needed).
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

pub(super) fn check(config: &Config) -> Vec<Line> {
    let mut lines = Vec::new();
    let dataroot = &config.moodle.dataroot;
    lines.push(match readable_dir(dataroot) {
        Err(e) => Line::new(Verdict::Fail, "moodle.dataroot", e),
        Ok(()) if !dataroot.join("filedir").is_dir() => Line::new(
            Verdict::Warn,
            "moodle.dataroot",
            format!(
                "{} is readable but has no filedir/: is it Moodle's $CFG->dataroot?",
                dataroot.display()
            ),
        ),
        Ok(()) => Line::new(
            Verdict::Ok,
            "moodle.dataroot",
            format!("{} is readable (filedir/ found)", dataroot.display()),
        ),
    });
    let roots = config
        .sendfile
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("sendfile.mappings[{i}].root"), &m.root))
        .chain(
            config
                .sendfile
                .sendfile_roots
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("sendfile.sendfile_roots[{i}]"), r)),
        );
    for (key, root) in roots {
        lines.push(match readable_dir(root) {
            Ok(()) => Line::new(Verdict::Ok, key, format!("{} is readable", root.display())),
            Err(e) => Line::new(Verdict::Fail, key, e),
        });
    }
    lines
}

/// Lists the directory and looks inside it: a file under it can be opened only with both
/// read and search (x) permission on it and search permission on every parent.
fn readable_dir(dir: &Path) -> Result<(), String> {
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if let Some(Ok(entry)) = entries.next() {
        std::fs::symlink_metadata(entry.path()).map_err(|e| {
            format!(
                "{} can be listed but not entered (no x permission): {e}",
                dir.display()
            )
        })?;
    }
    Ok(())
}
