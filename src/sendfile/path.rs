//! From an offload header to an open file: percent-decoding, normalisation, the mapping or root
//! lookup and the symlink policy. Everything here is blocking file-system work; the caller runs it
//! on tokio's blocking pool.
//!
//! The order matters and mirrors nginx's `ngx_http_parse_unsafe_uri` + `alias`: decode once,
//! refuse what could escape (`..`, NUL), then map, then let the file system have its say.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use http::StatusCode;

use super::config::SymlinkPolicy;

/// Why an offload was not served. The label is the `reason` of
/// `moodle_edge_offload_refusals_total`, so it must stay short and stable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// A `..` segment or a backslash: someone is trying to climb out of the root.
    #[error("path contains a `..` segment or a backslash")]
    Traversal,
    /// An X-Sendfile path that lies under no `sendfile_roots` entry (or is relative).
    #[error("path lies outside every configured root")]
    OutsideRoot,
    /// The symlink policy said no (a symlink under `deny`, an escape under `within_root`).
    #[error("path is refused by the symlink policy")]
    Symlink,
    /// A directory, FIFO, socket or device: only regular files are served.
    #[error("path is not a regular file")]
    NotRegular,
    #[error("file does not exist")]
    NotFound,
    /// An X-Accel-Redirect URI under no configured `prefix` (or empty, or a named location).
    #[error("URI matches no mapping prefix")]
    NoMapping,
    /// Malformed percent-escape or a NUL byte after decoding.
    #[error("header value is badly encoded")]
    BadEncoding,
    /// The proxy's user may not read the file (EACCES/EPERM), like nginx's 403.
    #[error("permission denied")]
    Permission,
    /// Anything else the file system threw at us (EIO, EMFILE, ...): a server fault, not bad input.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
}

impl Refusal {
    /// The metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refusal::Traversal => "traversal",
            Refusal::OutsideRoot => "outside_root",
            Refusal::Symlink => "symlink",
            Refusal::NotRegular => "not_regular",
            Refusal::NotFound => "not_found",
            Refusal::NoMapping => "no_mapping",
            Refusal::BadEncoding => "bad_encoding",
            Refusal::Permission => "permission",
            Refusal::Io(_) => "io_error",
        }
    }

    /// 404 when there is nothing to serve, 403 when a policy refused it. Only a genuine disk
    /// fault (`io_error`) is a 500: it is not bad input, and hiding it as 404 would let caches
    /// keep it.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NotFound | Refusal::NoMapping => StatusCode::NOT_FOUND,
            Refusal::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// Sorts an error from `stat`/`open` the way nginx's static handler does.
    fn from_io(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => {
                Refusal::NotFound
            }
            Some(libc::EACCES) | Some(libc::EPERM) => Refusal::Permission,
            // O_NOFOLLOW met a symlink as the last component.
            Some(libc::ELOOP) => Refusal::Symlink,
            _ if err.kind() == io::ErrorKind::NotFound => Refusal::NotFound,
            _ => Refusal::Io(err),
        }
    }
}

/// A file that passed every check, open and ready to stream.
#[derive(Debug)]
pub(crate) struct Opened {
    pub file: File,
    /// The path as resolved (canonical under `within_root`), for the access log.
    pub path: PathBuf,
    /// Taken from the open handle, so size and mtime describe what we will read.
    pub meta: Metadata,
}

/// Splits a path into its segments: empty and `.` segments vanish (that is what `//` and `/./`
/// mean), `..` and backslashes are refused outright rather than resolved, because a
/// legitimate Moodle path never has them.
pub(crate) fn segments(path: &[u8]) -> Result<Vec<&[u8]>, Refusal> {
    let mut out = Vec::new();
    for seg in path.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => continue,
            b".." => return Err(Refusal::Traversal),
            _ if seg.contains(&b'\\') => return Err(Refusal::Traversal),
            _ if seg.contains(&0) => return Err(Refusal::BadEncoding),
            _ => out.push(seg),
        }
    }
    Ok(out)
}

/// Percent-decodes strictly: a `%` must be followed by two hex digits. nginx is lenient here,
/// but a broken escape from Moodle means a bug worth seeing in the metrics, not a guess.
pub(crate) fn percent_decode_strict(input: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3).ok_or(Refusal::BadEncoding)?;
            let text = std::str::from_utf8(hex).map_err(|_| Refusal::BadEncoding)?;
            let byte = u8::from_str_radix(text, 16).map_err(|_| Refusal::BadEncoding)?;
            out.push(byte);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Turns an X-Accel-Redirect value into the segments of its path: decoded once (Moodle
/// rawurlencodes the whole value, nginx unescapes it), query dropped, NUL refused.
///
/// nginx splits the query off before decoding, so an encoded `%3F` stays in its file name. We
/// split after decoding: Moodle encodes the whole value, so any `?` it meant arrives as `%3F`,
/// and its content-hash file names never contain one.
pub(crate) fn accel_uri_segments(value: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
    let decoded = percent_decode_strict(value)?;
    if decoded.contains(&0) {
        return Err(Refusal::BadEncoding);
    }
    let path = match decoded.iter().position(|b| *b == b'?') {
        Some(at) => &decoded[..at],
        None => &decoded[..],
    };
    // A relative URI or a named location (`@name`) can never match an absolute prefix.
    if path.first() != Some(&b'/') {
        return Err(Refusal::NoMapping);
    }
    Ok(segments(path)?.into_iter().map(<[u8]>::to_vec).collect())
}

/// Splits an X-Sendfile value (a plain absolute path, never percent-encoded: Moodle and
/// mod_xsendfile both send it as is) into its segments.
pub(crate) fn sendfile_path_segments(value: &[u8]) -> Result<Vec<Vec<u8>>, Refusal> {
    if value.contains(&0) {
        return Err(Refusal::BadEncoding);
    }
    if value.first() != Some(&b'/') {
        return Err(Refusal::OutsideRoot);
    }
    Ok(segments(value)?.into_iter().map(<[u8]>::to_vec).collect())
}

/// The segments of a configured root or prefix (`/var/moodledata/` -> `["var", "moodledata"]`).
/// Config is trusted, so `..` is kept as a literal segment rather than refused; it then simply
/// never matches a request (whose `..` segments are refused).
pub(crate) fn config_segments(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|s| !s.is_empty() && *s != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// Opens `relative` (already normalised, no `..`) under `root` according to `policy`.
pub(crate) fn open_under(
    root: &Path,
    relative: &[Vec<u8>],
    policy: SymlinkPolicy,
) -> Result<Opened, Refusal> {
    let mut candidate = root.to_path_buf();
    for seg in relative {
        candidate.push(OsStr::from_bytes(seg));
    }
    match policy {
        SymlinkPolicy::Follow => open_regular(candidate, false, None),
        SymlinkPolicy::Deny => {
            let walked = walk_without_symlinks(root, relative)?;
            open_regular(candidate, true, Some(walked))
        }
        SymlinkPolicy::WithinRoot => {
            let canonical_root = root.canonicalize().map_err(Refusal::from_io)?;
            let canonical = candidate.canonicalize().map_err(Refusal::from_io)?;
            // After normalisation only a symlink can lead out of the root, hence `Symlink`.
            if !canonical.starts_with(&canonical_root) {
                return Err(Refusal::Symlink);
            }
            // The canonical path has no symlinks left; O_NOFOLLOW stops a last-moment swap of
            // the file itself for a symlink.
            open_regular(canonical, true, None)
        }
    }
}

/// `deny`: looks at every component under the root with `lstat` and refuses the first symlink.
/// The root itself may be a symlink (`/var/moodledata -> /srv/data` is an operator's choice).
/// Returns the `lstat` of the file so `open_regular` can check it opened the same inode.
fn walk_without_symlinks(root: &Path, relative: &[Vec<u8>]) -> Result<Metadata, Refusal> {
    let mut current = root.to_path_buf();
    let mut last = None;
    for seg in relative {
        current.push(OsStr::from_bytes(seg));
        let meta = std::fs::symlink_metadata(&current).map_err(Refusal::from_io)?;
        if meta.file_type().is_symlink() {
            return Err(Refusal::Symlink);
        }
        last = Some(meta);
    }
    // No segments at all means the root directory itself.
    last.ok_or(Refusal::NotRegular)
}

/// Opens a path that must be a regular file.
///
/// `stat` first, so a FIFO or device is refused before `open` could block on it or trigger its
/// side effects; `O_NONBLOCK` covers a FIFO swapped in after the `stat`. Then `fstat` on the
/// handle, because that is the file we will actually read.
fn open_regular(
    path: PathBuf,
    no_follow: bool,
    walked: Option<Metadata>,
) -> Result<Opened, Refusal> {
    let pre = std::fs::metadata(&path).map_err(Refusal::from_io)?;
    if !pre.is_file() {
        return Err(Refusal::NotRegular);
    }
    let mut flags = libc::O_NONBLOCK;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(&path)
        .map_err(Refusal::from_io)?;
    let meta = file.metadata().map_err(Refusal::from_io)?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    // Under `deny` an intermediate directory could have been swapped for a symlink between the
    // walk and the open; the inode check catches that the file we opened is not the one walked.
    if let Some(walked) = walked {
        if walked.dev() != meta.dev() || walked.ino() != meta.ino() {
            return Err(Refusal::Symlink);
        }
    }
    Ok(Opened { file, path, meta })
}

/// Finds the longest root that contains `path` (both as segments) and returns its index and the
/// remainder. Longest, so a nested root's own policy walk starts at the nested root.
pub(crate) fn longest_match<'a>(
    roots: impl Iterator<Item = (usize, &'a [Vec<u8>])>,
    path: &[Vec<u8>],
) -> Option<(usize, usize)> {
    roots
        .filter(|(_, root)| path.starts_with(root))
        .max_by_key(|(_, root)| root.len())
        .map(|(index, root)| (index, root.len()))
}

/// Whether a client-supplied request path reaches an internal prefix, after every trick a
/// front server might undo: up to three rounds of percent-decoding (`%252F`), backslashes read
/// as slashes, `//`, `/./` and `/x/../` resolved.
pub(crate) fn path_reaches_prefix(path: &str, prefixes: &[Vec<Vec<u8>>]) -> bool {
    // The query and fragment are not part of the path.
    let path = path.split(['?', '#']).next().unwrap_or("");
    let bytes = path.as_bytes();
    // Most paths have nothing to decode (no '%') and no dot segment or backslash to resolve:
    // their non-empty segments are compared as they are, without allocating. Anything else
    // takes the full walk below.
    if !bytes.contains(&b'%')
        && !bytes.contains(&b'\\')
        && !bytes.starts_with(b".")
        && !bytes.windows(2).any(|w| w == b"/.")
    {
        return prefixes.iter().any(|prefix| {
            let mut segments = bytes.split(|b| *b == b'/').filter(|s| !s.is_empty());
            !prefix.is_empty() && prefix.iter().all(|p| segments.next() == Some(p.as_slice()))
        });
    }
    reaches_after_decoding(bytes, prefixes)
}

/// The full walk: percent-decoded up to three times, dot segments resolved at each step.
fn reaches_after_decoding(bytes: &[u8], prefixes: &[Vec<Vec<u8>>]) -> bool {
    let mut current: Vec<u8> = bytes.to_vec();
    for _ in 0..3 {
        if normalised_starts_with_any(&current, prefixes) {
            return true;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode(&current).collect();
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    normalised_starts_with_any(&current, prefixes)
}

/// Resolves `.`/`..`/empty segments the way a web server would (popping on `..`, never above
/// the top) and compares against each prefix.
fn normalised_starts_with_any(path: &[u8], prefixes: &[Vec<Vec<u8>>]) -> bool {
    let mut stack: Vec<&[u8]> = Vec::new();
    for seg in path.split(|b| *b == b'/' || *b == b'\\') {
        match seg {
            b"" | b"." => {}
            b".." => {
                stack.pop();
            }
            _ => stack.push(seg),
        }
    }
    prefixes.iter().any(|prefix| {
        !prefix.is_empty()
            && stack.len() >= prefix.len()
            && stack.iter().zip(prefix).all(|(a, b)| *a == b.as_slice())
    })
}

/// The segments of an absolute configured root, `None` for a relative one.
pub(crate) fn root_segments(root: &Path) -> Option<Vec<Vec<u8>>> {
    if !root.is_absolute() {
        return None;
    }
    Some(
        root.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn segs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn accel_decoding() {
        assert_eq!(
            accel_uri_segments(b"%2Fdataroot%2Ffiledir%2F08%2Ff5%2F08f5").unwrap(),
            segs(&["dataroot", "filedir", "08", "f5", "08f5"])
        );
        assert_eq!(
            accel_uri_segments(b"/dataroot/filedir/ab").unwrap(),
            segs(&["dataroot", "filedir", "ab"])
        );
        // Double slashes and `/./` collapse.
        assert_eq!(
            accel_uri_segments(b"/dataroot//./filedir/ab").unwrap(),
            segs(&["dataroot", "filedir", "ab"])
        );
        // A query (raw or encoded) is dropped.
        assert_eq!(
            accel_uri_segments(b"%2Fdataroot%2Fa%3Fx%3D1").unwrap(),
            segs(&["dataroot", "a"])
        );
        assert_eq!(
            accel_uri_segments(b"/dataroot/a?x=/../").unwrap(),
            segs(&["dataroot", "a"])
        );
        // Decoded exactly once: `%252e` is a literal file name, not a traversal.
        assert_eq!(
            accel_uri_segments(b"/d/%252e%252e/x").unwrap(),
            segs(&["d", "%2e%2e", "x"])
        );
    }

    #[test]
    fn accel_refusals() {
        let label = |v: &[u8]| accel_uri_segments(v).unwrap_err().label();
        assert_eq!(label(b"/dataroot/%2e%2e/etc/passwd"), "traversal");
        assert_eq!(label(b"/dataroot/..%2fetc%2fpasswd"), "traversal");
        assert_eq!(label(b"%2Fdataroot%2F..%2F..%2Fetc"), "traversal");
        assert_eq!(label(b"/dataroot/.."), "traversal");
        assert_eq!(label(b"/dataroot/..\\etc"), "traversal");
        assert_eq!(label(b"/dataroot/a%00.txt"), "bad_encoding");
        assert_eq!(label(b"/dataroot/a%zz"), "bad_encoding");
        assert_eq!(label(b"/dataroot/a%4"), "bad_encoding");
        assert_eq!(label(b"dataroot/a"), "no_mapping");
        assert_eq!(label(b"@named"), "no_mapping");
        assert_eq!(label(b""), "no_mapping");
    }

    #[test]
    fn sendfile_paths() {
        assert_eq!(
            sendfile_path_segments(b"/var/md/a").unwrap(),
            segs(&["var", "md", "a"])
        );
        // X-Sendfile is not percent-decoded.
        assert_eq!(
            sendfile_path_segments(b"/var/%2e%2e").unwrap(),
            segs(&["var", "%2e%2e"])
        );
        assert_eq!(
            sendfile_path_segments(b"/var/md/../x").unwrap_err().label(),
            "traversal"
        );
        assert_eq!(
            sendfile_path_segments(b"var/md").unwrap_err().label(),
            "outside_root"
        );
        assert_eq!(
            sendfile_path_segments(b"/var/\0x").unwrap_err().label(),
            "bad_encoding"
        );
    }

    #[test]
    fn longest_root_wins() {
        let roots = [segs(&["var"]), segs(&["var", "md"]), segs(&["srv"])];
        let iter = || roots.iter().enumerate().map(|(i, r)| (i, r.as_slice()));
        assert_eq!(
            longest_match(iter(), &segs(&["var", "md", "a"])),
            Some((1, 2))
        );
        assert_eq!(longest_match(iter(), &segs(&["var", "x"])), Some((0, 1)));
        assert_eq!(longest_match(iter(), &segs(&["varx", "a"])), None);
        assert_eq!(longest_match(iter(), &segs(&["etc"])), None);
    }

    #[test]
    fn internal_paths() {
        let prefixes = vec![config_segments(b"/moodledata-internal/")];
        let hit = |p: &str| path_reaches_prefix(p, &prefixes);
        assert!(hit("/moodledata-internal/filedir/ab"));
        assert!(hit("/moodledata-internal"));
        assert!(hit("//moodledata-internal/x"));
        assert!(hit("/./moodledata-internal/x"));
        assert!(hit("/foo/../moodledata-internal/x"));
        assert!(hit("/%6doodledata-internal/x"));
        assert!(hit("%2Fmoodledata-internal%2Fx"));
        assert!(hit("/%252Fmoodledata-internal/x"));
        assert!(hit("\\moodledata-internal\\x"));
        assert!(!hit("/moodledata-internalx/x"));
        assert!(!hit("/Moodledata-Internal/x"));
        assert!(!hit("/pluginfile.php/1/x?f=/moodledata-internal/"));
        assert!(!hit("/"));
        assert!(!hit("/moodledata-internal/../x"));
        assert!(!hit("/a/moodledata-internal/x"));
    }

    #[test]
    fn the_quick_path_agrees_with_the_full_walk() {
        let prefixes = vec![
            config_segments(b"/moodledata-internal/"),
            config_segments(b"/x/y/"),
        ];
        for p in [
            "/",
            "",
            "/x",
            "/x/y",
            "/x/y/z",
            "//x//y",
            "/x/yz",
            "/xx/y/z",
            "/moodledata-internal",
            "/moodledata-internal/",
            "/course/view.php",
            "moodledata-internal/a",
            "/x/./y",
            "/a/x/y",
            "/pluginfile.php/1/mod_page/content/x.png",
        ] {
            let quick = path_reaches_prefix(p, &prefixes);
            assert_eq!(
                quick,
                reaches_after_decoding(p.as_bytes(), &prefixes),
                "{p}"
            );
        }
    }

    struct Tree {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    /// root/{a.txt, sub/b.txt, link-in -> sub/b.txt, link-out -> ../outside.txt, dir-link -> sub,
    /// fifo}, outside.txt next to root.
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        std::fs::write(root.join("sub/b.txt"), b"bee").unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"secret").unwrap();
        symlink(root.join("sub/b.txt"), root.join("link-in")).unwrap();
        symlink(&outside, root.join("link-out")).unwrap();
        symlink(root.join("sub"), root.join("dir-link")).unwrap();
        let _ = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status();
        Tree {
            _dir: dir,
            root,
            outside,
        }
    }

    fn open(t: &Tree, rel: &str, policy: SymlinkPolicy) -> Result<Opened, Refusal> {
        open_under(&t.root, &config_segments(rel.as_bytes()), policy)
    }

    #[test]
    fn plain_files_open_under_every_policy() {
        let t = tree();
        for policy in [
            SymlinkPolicy::Deny,
            SymlinkPolicy::WithinRoot,
            SymlinkPolicy::Follow,
        ] {
            let opened = open(&t, "sub/b.txt", policy).unwrap();
            assert_eq!(opened.meta.len(), 3);
            assert_eq!(
                open(&t, "missing", policy).unwrap_err().label(),
                "not_found"
            );
            assert_eq!(
                open(&t, "a.txt/x", policy).unwrap_err().label(),
                "not_found"
            );
            assert_eq!(open(&t, "sub", policy).unwrap_err().label(), "not_regular");
            assert_eq!(open(&t, "", policy).unwrap_err().label(), "not_regular");
            if t.root.join("fifo").exists() {
                assert_eq!(open(&t, "fifo", policy).unwrap_err().label(), "not_regular");
            }
        }
    }

    #[test]
    fn symlink_deny() {
        let t = tree();
        let p = SymlinkPolicy::Deny;
        assert_eq!(open(&t, "link-in", p).unwrap_err().label(), "symlink");
        assert_eq!(open(&t, "link-out", p).unwrap_err().label(), "symlink");
        assert_eq!(
            open(&t, "dir-link/b.txt", p).unwrap_err().label(),
            "symlink"
        );
    }

    #[test]
    fn symlink_within_root() {
        let t = tree();
        let p = SymlinkPolicy::WithinRoot;
        assert_eq!(open(&t, "link-in", p).unwrap().meta.len(), 3);
        assert_eq!(open(&t, "dir-link/b.txt", p).unwrap().meta.len(), 3);
        assert_eq!(open(&t, "link-out", p).unwrap_err().label(), "symlink");
        // The reported path is the canonical one.
        assert!(open(&t, "link-in", p).unwrap().path.ends_with("sub/b.txt"));
    }

    #[test]
    fn symlink_follow() {
        let t = tree();
        let p = SymlinkPolicy::Follow;
        assert_eq!(open(&t, "link-out", p).unwrap().meta.len(), 6);
        assert_eq!(open(&t, "dir-link/b.txt", p).unwrap().meta.len(), 3);
        assert!(t.outside.exists());
    }

    #[test]
    fn a_symlinked_root_is_fine_under_deny() {
        let t = tree();
        let link_root = t.root.parent().unwrap().join("root-link");
        symlink(&t.root, &link_root).unwrap();
        let opened = open_under(&link_root, &segs(&["a.txt"]), SymlinkPolicy::Deny).unwrap();
        assert_eq!(opened.meta.len(), 5);
        let opened = open_under(&link_root, &segs(&["a.txt"]), SymlinkPolicy::WithinRoot).unwrap();
        assert_eq!(opened.meta.len(), 5);
    }

    #[test]
    fn statuses() {
        assert_eq!(Refusal::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(Refusal::NoMapping.status(), StatusCode::NOT_FOUND);
        assert_eq!(Refusal::Traversal.status(), StatusCode::FORBIDDEN);
        assert_eq!(Refusal::Symlink.status(), StatusCode::FORBIDDEN);
        assert_eq!(Refusal::BadEncoding.status(), StatusCode::FORBIDDEN);
    }
}
