//! Differential test: the same requests through moodle-edge and through nginx 1.22 (the front
//! server Moodle's X-Accel-Redirect support was written for), both in front of the same
//! stand-in Moodle, both serving the same directory. Status, the headers that matter and the
//! bodies must agree, except where they differ by design: each such case says so, checks what
//! each side does, and is listed in docs/file-offload.md.
//!
//! Skips (passes with a note) only when `nginx` is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

mod sendfile_common;

use std::path::Path;

use sendfile_common::{
    find_nginx, multipart_parts, pattern, rawurlencode, request, Nginx, Proxy, Resp, Standin,
    PREFIX,
};

const PDF_LEN: usize = 300_001;
const TXT_NAME: &str = "dir with space/ünï cöde.txt";

/// How the two answers must relate.
enum Expect {
    /// Same status, same headers that matter, same body.
    Same,
    /// A difference by design: `check(edge, nginx)` asserts what each side does; the text is the
    /// reason, printed with any failure.
    Differs(&'static str, fn(&Resp, &Resp) -> Result<(), String>),
}

struct Case {
    name: &'static str,
    method: &'static str,
    target: String,
    /// `{etag}` and `{lm}` are replaced by that side's own ETag and Last-Modified for the file.
    headers: Vec<(&'static str, String)>,
    expect: Expect,
}

fn case(name: &'static str, method: &'static str, target: impl Into<String>) -> Case {
    Case {
        name,
        method,
        target: target.into(),
        headers: Vec::new(),
        expect: Expect::Same,
    }
}

impl Case {
    fn h(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn differs(mut self, why: &'static str, check: fn(&Resp, &Resp) -> Result<(), String>) -> Case {
        self.expect = Expect::Differs(why, check);
        self
    }
}

fn pdf() -> String {
    "/pluginfile.php/a.pdf".to_string()
}

/// The upstream answers with this X-Accel-Redirect value, byte for byte.
fn raw(value: &str) -> String {
    format!("/raw?v={}", rawurlencode(value))
}

fn corpus() -> Vec<Case> {
    let txt = format!("/pluginfile.php/{}", rawurlencode(TXT_NAME));
    vec![
        // --- plain
        case("GET", "GET", pdf()),
        case("HEAD", "HEAD", pdf()),
        case(
            "GET, encoded name with spaces and UTF-8",
            "GET",
            txt.clone(),
        ),
        case("GET, empty file", "GET", "/pluginfile.php/empty.bin"),
        case("GET, missing file", "GET", "/pluginfile.php/missing.pdf"),
        // --- single ranges
        case("range, first bytes", "GET", pdf()).h("Range", "bytes=0-99"),
        case("range, middle", "GET", pdf()).h("Range", "bytes=1000-1999"),
        case("range, suffix", "GET", pdf()).h("Range", "bytes=-500"),
        case("range, open-ended", "GET", pdf()).h("Range", "bytes=299000-"),
        case("range, end past EOF is clamped", "GET", pdf()).h("Range", "bytes=299990-400000"),
        case("range, whole file as 0-", "GET", pdf()).h("Range", "bytes=0-"),
        case("range on a text file", "GET", txt).h("Range", "bytes=10-20"),
        // --- multi ranges
        case("multi-range, two", "GET", pdf()).h("Range", "bytes=0-9,-10"),
        case("multi-range, three in asked order", "GET", pdf())
            .h("Range", "bytes=5000-5099,0-9,100-199"),
        case("multi-range, one unsatisfiable dropped", "GET", pdf())
            .h("Range", "bytes=0-9,400000-400009"),
        // --- bad ranges
        case("range, unsatisfiable", "GET", pdf()).h("Range", "bytes=400000-"),
        case(
            "range, unsatisfiable on empty file",
            "GET",
            "/pluginfile.php/empty.bin",
        )
        .h("Range", "bytes=10-20"),
        case("range, not a bytes unit", "GET", pdf()).h("Range", "items=0-5"),
        case("range, syntactically invalid", "GET", pdf())
            .h("Range", "bytes=abc")
            .differs(
                "we ignore a malformed Range (RFC 9110 lets a server ignore Range; the client \
                 gets the file it asked for), nginx answers 416",
                full_vs_416,
            ),
        case("range, last before first", "GET", pdf())
            .h("Range", "bytes=500-100")
            .differs(
                "RFC 9110 §14.1.1 calls last<first invalid: we ignore the header, nginx 416",
                full_vs_416,
            ),
        case("HEAD with Range", "HEAD", pdf())
            .h("Range", "bytes=0-99")
            .differs(
                "RFC 9110 §14.2 defines Range for GET only: we answer HEAD with the 200 head, \
                 nginx with the 206 head",
                head_range,
            ),
        // --- conditionals
        case("If-None-Match, match", "GET", pdf()).h("If-None-Match", "{etag}"),
        case("If-None-Match, *", "GET", pdf()).h("If-None-Match", "*"),
        case("If-None-Match, mismatch", "GET", pdf()).h("If-None-Match", "\"nope\""),
        case("If-Modified-Since, past", "GET", pdf())
            .h("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
        case("If-Modified-Since, exactly Last-Modified", "GET", pdf())
            .h("If-Modified-Since", "{lm}"),
        case("If-Modified-Since, future", "GET", pdf())
            .h("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
            .differs(
                "RFC 9110 §13.1.3: not modified since a later date is a 304; nginx's default \
                 `if_modified_since exact` only answers 304 to the exact date",
                not_modified_vs_full,
            ),
        case("If-Match, mismatch", "GET", pdf()).h("If-Match", "\"nope\""),
        case("If-Match, match", "GET", pdf()).h("If-Match", "{etag}"),
        case("If-Unmodified-Since, past", "GET", pdf())
            .h("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
        case("If-Unmodified-Since, future", "GET", pdf())
            .h("If-Unmodified-Since", "Fri, 01 Jan 2100 00:00:00 GMT"),
        case("If-Range ETag, match", "GET", pdf())
            .h("Range", "bytes=0-99")
            .h("If-Range", "{etag}"),
        case("If-Range ETag, mismatch", "GET", pdf())
            .h("Range", "bytes=0-99")
            .h("If-Range", "\"nope\""),
        case("If-Range date, match", "GET", pdf())
            .h("Range", "bytes=0-99")
            .h("If-Range", "{lm}"),
        case("If-Range date, mismatch", "GET", pdf())
            .h("Range", "bytes=0-99")
            .h("If-Range", "Sat, 01 Jan 2000 00:00:00 GMT"),
        // --- traversal and hostile values from the upstream (secret.txt lies outside the root)
        case(
            "traversal, `..` rawurlencoded (Moodle style)",
            "GET",
            raw(&rawurlencode("/moodledata-internal/../secret.txt")),
        )
        .differs(REFUSAL_STATUS, refused_403_vs_404),
        case(
            "traversal, `..` plain",
            "GET",
            raw("/moodledata-internal/../secret.txt"),
        )
        .differs(REFUSAL_STATUS, refused_403_vs_404),
        case(
            "traversal, %2e%2e",
            "GET",
            raw("/moodledata-internal/%2e%2e/secret.txt"),
        )
        .differs(REFUSAL_STATUS, refused_403_vs_404),
        case(
            "traversal, %2e%2e rawurlencoded again",
            "GET",
            raw(&rawurlencode("/moodledata-internal/%2e%2e/secret.txt")),
        ),
        case(
            "NUL byte, %00",
            "GET",
            raw("/moodledata-internal/a.pdf%00.txt"),
        )
        .differs(REFUSAL_STATUS, refused_403_vs_404),
        case("URI under no mapping", "GET", raw("/elsewhere/a.pdf")).differs(
            "an X-Accel-Redirect URI outside every mapping is refused with 404; nginx runs it \
             through its locations, here the proxy_pass one, and answers with whatever the \
             upstream says for that URI",
            no_mapping,
        ),
        // --- clients may never reach the internal prefix directly
        case(
            "direct request to the internal prefix",
            "GET",
            format!("{PREFIX}a.pdf"),
        ),
        case(
            "direct request, encoded prefix",
            "GET",
            "/%6Doodledata-internal/a.pdf",
        ),
        case(
            "direct request, dot segments",
            "GET",
            format!("/x/..{PREFIX}a.pdf"),
        ),
    ]
}

const REFUSAL_STATUS: &str = "both refuse; we answer 403 (a policy refused it: `traversal`, \
     `bad_encoding`), nginx 404 (its unsafe-URI check); neither ever serves the file";

fn status_is(r: &Resp, side: &str, status: u16) -> Result<(), String> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!("{side}: status {} (want {status})", r.status))
    }
}

fn full_vs_416(edge: &Resp, nginx: &Resp) -> Result<(), String> {
    status_is(edge, "moodle-edge", 200)?;
    status_is(nginx, "nginx", 416)?;
    if edge.body != pattern(PDF_LEN) {
        return Err("moodle-edge: the 200 body is not the whole file".into());
    }
    Ok(())
}

fn head_range(edge: &Resp, nginx: &Resp) -> Result<(), String> {
    status_is(edge, "moodle-edge", 200)?;
    if ![200, 206].contains(&nginx.status) {
        return Err(format!("nginx: status {}", nginx.status));
    }
    if edge.header("content-length") != Some(&PDF_LEN.to_string()) || !edge.body.is_empty() {
        return Err("moodle-edge: HEAD must carry the file's length and no body".into());
    }
    Ok(())
}

fn not_modified_vs_full(edge: &Resp, nginx: &Resp) -> Result<(), String> {
    status_is(edge, "moodle-edge", 304)?;
    status_is(nginx, "nginx", 200)?;
    if !edge.body.is_empty() {
        return Err("moodle-edge: a 304 with a body".into());
    }
    Ok(())
}

fn refused_403_vs_404(edge: &Resp, nginx: &Resp) -> Result<(), String> {
    status_is(edge, "moodle-edge", 403)?;
    status_is(nginx, "nginx", 404)?;
    never_secret(edge, nginx)
}

fn no_mapping(edge: &Resp, nginx: &Resp) -> Result<(), String> {
    status_is(edge, "moodle-edge", 404)?;
    // The stand-in answers "stand-in" to any other path.
    if nginx.status != 200 || nginx.body != b"stand-in" {
        return Err(format!(
            "nginx: expected the upstream's own answer, got {} {:?}",
            nginx.status,
            String::from_utf8_lossy(&nginx.body)
        ));
    }
    Ok(())
}

fn never_secret(edge: &Resp, nginx: &Resp) -> Result<(), String> {
    for (side, r) in [("moodle-edge", edge), ("nginx", nginx)] {
        if String::from_utf8_lossy(&r.body).contains("TOP SECRET") {
            return Err(format!("{side} served the file outside the root"));
        }
    }
    Ok(())
}

/// The Accept-Ranges values as a set: nginx repeats the header when the upstream sent it too.
fn accept_ranges(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r
        .all("accept-ranges")
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn compare(edge: &Resp, nginx: &Resp, method: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    if edge.status != nginx.status {
        diffs.push(format!(
            "status: moodle-edge {} vs nginx {}",
            edge.status, nginx.status
        ));
        return diffs;
    }
    let success = (200..300).contains(&edge.status) || edge.status == 304;
    let multipart = edge
        .header("content-type")
        .is_some_and(|t| t.starts_with("multipart/byteranges"));
    let mut names = vec!["content-range"];
    if success {
        names.extend([
            "last-modified",
            "content-disposition",
            "cache-control",
            "expires",
        ]);
        if !multipart {
            names.extend(["content-length", "content-type"]);
        }
    }
    for name in names {
        if edge.header(name) != nginx.header(name) {
            diffs.push(format!(
                "{name}: moodle-edge {:?} vs nginx {:?}",
                edge.header(name),
                nginx.header(name)
            ));
        }
    }
    if success {
        if edge.header("etag").is_some() != nginx.header("etag").is_some() {
            diffs.push(format!(
                "etag presence: moodle-edge {:?} vs nginx {:?}",
                edge.header("etag"),
                nginx.header("etag")
            ));
        }
        if accept_ranges(edge) != accept_ranges(nginx) && edge.status != 304 {
            diffs.push(format!(
                "accept-ranges: moodle-edge {:?} vs nginx {:?}",
                edge.all("accept-ranges"),
                nginx.all("accept-ranges")
            ));
        }
        let set_cookie = |r: &Resp| r.all("set-cookie").join(" | ");
        if set_cookie(edge) != set_cookie(nginx) {
            diffs.push(format!(
                "set-cookie: moodle-edge {:?} vs nginx {:?}",
                set_cookie(edge),
                set_cookie(nginx)
            ));
        }
        for (side, r) in [("moodle-edge", edge), ("nginx", nginx)] {
            let declared = r
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok());
            if method == "GET" && edge.status != 304 && declared != Some(r.body.len()) {
                diffs.push(format!(
                    "{side}: content-length {declared:?} but {} body bytes",
                    r.body.len()
                ));
            }
        }
    }
    // Bodies: our error pages are short text/plain, nginx's are HTML; only success bodies count.
    if success {
        if multipart {
            let parts =
                |r: &Resp| multipart_parts(r.header("content-type").unwrap_or_default(), &r.body);
            match (parts(edge), parts(nginx)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => diffs.push(format!(
                    "multipart parts differ: moodle-edge {} parts, nginx {} parts",
                    a.map_or(-1, |p| p.len() as i64),
                    b.map_or(-1, |p| p.len() as i64)
                )),
            }
            if !nginx
                .header("content-type")
                .is_some_and(|t| t.starts_with("multipart/byteranges; boundary="))
            {
                diffs.push(format!(
                    "nginx content-type {:?}",
                    nginx.header("content-type")
                ));
            }
        } else if edge.body != nginx.body {
            diffs.push(format!(
                "body: moodle-edge {} bytes vs nginx {} bytes",
                edge.body.len(),
                nginx.body.len()
            ));
        }
    }
    diffs
}

fn send(port: u16, c: &Case, etag: &str, lm: &str) -> Resp {
    let headers: Vec<(&str, String)> = c
        .headers
        .iter()
        .map(|(k, v)| (*k, v.replace("{etag}", etag).replace("{lm}", lm)))
        .collect();
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(port, c.method, &c.target, &refs)
        .unwrap_or_else(|e| panic!("{}: request to port {port} failed: {e}", c.name))
}

fn make_tree(base: &Path) -> std::path::PathBuf {
    let root = base.join("moodledata");
    std::fs::create_dir_all(root.join("dir with space")).unwrap();
    std::fs::write(root.join("a.pdf"), pattern(PDF_LEN)).unwrap();
    std::fs::write(root.join(TXT_NAME), pattern(1000)).unwrap();
    std::fs::write(root.join("empty.bin"), b"").unwrap();
    // Outside the root: a traversal that worked would serve this.
    std::fs::write(base.join("secret.txt"), b"TOP SECRET\n").unwrap();
    root
}

#[test]
fn moodle_edge_answers_like_nginx() {
    // A missing peer fails the test: scripts/install-test-deps.sh installs nginx.
    let nginx_bin = find_nginx().expect("nginx is not installed: run scripts/install-test-deps.sh");
    let base = tempfile::tempdir().unwrap();
    let root = make_tree(base.path());
    let standin = Standin::start();
    let edge = Proxy::start(standin.addr, &root, "");
    let nginx = Nginx::start(&nginx_bin, standin.addr, &root);

    // Each side's own validators for a.pdf (the ETags differ by design, see below).
    let base_edge = request(edge.port, "GET", &pdf(), &[]).unwrap();
    let base_nginx = request(nginx.port, "GET", &pdf(), &[]).unwrap();
    assert_eq!(base_edge.status, 200, "{}", edge.output());
    assert_eq!(base_nginx.status, 200, "{}", nginx.errors());
    // Known difference: we keep Moodle's strong content-hash ETag (the same on every node and
    // after a restore); nginx makes "mtime-size" from the file.
    let moodle_etag = format!(
        "\"{}\"",
        hex::encode(<sha1::Sha1 as sha1::Digest>::digest(b"a.pdf"))
    );
    assert_eq!(base_edge.header("etag"), Some(moodle_etag.as_str()));
    let nginx_etag = base_nginx.header("etag").expect("nginx ETag").to_string();
    assert_ne!(nginx_etag, moodle_etag);
    let lm = base_edge.header("last-modified").unwrap().to_string();
    assert_eq!(base_nginx.header("last-modified"), Some(lm.as_str()));

    // SENDFILE_DIFF_VERBOSE=1 prints every answer's headers.
    let verbose = std::env::var_os("SENDFILE_DIFF_VERBOSE").is_some();
    let mut failures = Vec::new();
    let mut differ = 0;
    let cases = corpus();
    for c in &cases {
        let e = send(edge.port, c, &moodle_etag, &lm);
        let n = send(nginx.port, c, &nginx_etag, &lm);
        let summary = format!(
            "{} {} {:?}: moodle-edge {} ({} B), nginx {} ({} B)",
            c.method,
            c.target,
            c.headers,
            e.status,
            e.body.len(),
            n.status,
            n.body.len()
        );
        match &c.expect {
            Expect::Same => {
                let diffs = compare(&e, &n, c.method);
                if let Err(secret) = never_secret(&e, &n) {
                    failures.push(format!("{}: {secret}", c.name));
                }
                if !diffs.is_empty() {
                    failures.push(format!(
                        "{}: {summary}\n    {}",
                        c.name,
                        diffs.join("\n    ")
                    ));
                }
            }
            Expect::Differs(why, check) => {
                differ += 1;
                if let Err(err) = check(&e, &n) {
                    failures.push(format!(
                        "{} (known difference: {why}): {err}\n    {summary}",
                        c.name
                    ));
                }
            }
        }
        eprintln!("{:<48} {summary}", c.name);
        if verbose {
            eprintln!(
                "    moodle-edge: {:?}\n    nginx:       {:?}",
                e.headers, n.headers
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ unexpectedly:\n{}\n\nmoodle-edge log:\n{}\nnginx log:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        edge.output(),
        nginx.errors()
    );
    eprintln!(
        "{} cases: {} identical, {} known differences checked",
        cases.len(),
        cases.len() - differ,
        differ
    );
}
