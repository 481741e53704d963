use super::*;

const EXAMPLE: &str = include_str!("../../config.example.yaml");

/// The example with its commented-out settings switched on: a line that starts with `#` and
/// no space (`#sso:`), or `#` and an indent (`#  intercept:`), is a setting; `# text` is prose.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with("  ") => rest,
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic()) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_passes_check_as_shipped() {
    // Relative paths: cargo runs unit tests in the package's top directory.
    Config::load(Path::new("config.example.yaml")).unwrap();
}

#[test]
fn the_example_parses_with_every_section() {
    let c = Config::parse(&uncommented(EXAMPLE)).unwrap();
    assert_eq!(c.server.listen.len(), 2);
    assert_eq!(c.server.limits.max_header_size.bytes(), 64 * 1024);
    assert_eq!(c.webservice.rate_limits.len(), 3);
    assert_eq!(
        c.webservice.rate_limits[1].functions.as_deref(),
        Some(&["core_course_search_courses".to_string()][..])
    );
    assert!(c.webservice.circuit_breaker.is_some());
    let sso = c.sso.as_ref().unwrap();
    assert_eq!(sso.providers.len(), 3);
    assert_eq!(c.mnet.as_ref().unwrap().peers.len(), 1);
}

#[test]
fn the_example_with_every_section_fails_check_only_on_missing_files() {
    // The commented-out sections name production paths that do not exist here: every error
    // must be one.
    let c = Config::parse(&uncommented(EXAMPLE)).unwrap();
    let errors = c.check().unwrap_err().0;
    assert!(!errors.is_empty());
    for e in errors {
        assert!(e.message.contains("cannot read"), "unexpected error {e}");
    }
}

fn minimal(extra: &str) -> String {
    format!(
        "server:\n  listen:\n    - addr: \"127.0.0.1:8080\"\nupstream:\n  url: \"http://127.0.0.1:8081\"\nmoodle:\n  wwwroot: \"https://lms.example.edu\"\n  dataroot: /tmp\n{extra}"
    )
}

#[test]
fn minimal_config_is_valid() {
    let c = Config::parse(&minimal("")).unwrap();
    c.check().unwrap();
    assert_eq!(c.server.limits.max_body_size.bytes(), 2 << 30);
}

#[test]
fn a_typo_names_the_key_path() {
    let text = minimal("").replace(
        "  listen:",
        "  limits:\n    max_header_sise: 1KiB\n  listen:",
    );
    let e = Config::parse(&text).unwrap_err();
    assert_eq!(e.key, "server.limits.max_header_sise", "{e:?}");
    assert!(e.message.contains("max_header_sise"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let e = Config::parse(&minimal(
        "webservice:\n  rate_limits:\n    - key: token\n      rate: 60/fortnight\n",
    ))
    .unwrap_err();
    assert_eq!(e.key, "webservice.rate_limits[0].rate");
    let e = Config::parse(&minimal("webservice:\n  concurrency_wait: 30 seconds\n")).unwrap_err();
    assert_eq!(e.key, "webservice.concurrency_wait");
    let e = Config::parse(&minimal("store:\n  backend: etcd\n")).unwrap_err();
    assert_eq!(e.key, "store.backend");
    let e = Config::parse(&minimal("sendfile:\n  symlinks: sometimes\n")).unwrap_err();
    assert_eq!(e.key, "sendfile.symlinks");
}

#[test]
fn cross_field_checks() {
    let c = Config::parse(
        &minimal("upstream:\n  url: \"ftp://x\"\n")
            .replace("upstream:\n  url: \"http://127.0.0.1:8081\"\n", ""),
    )
    .unwrap();
    let errors = c.check().unwrap_err().0;
    assert!(errors.iter().any(|e| e.key == "upstream.url"), "{errors:?}");

    let c = Config::parse(&minimal(
        "webservice:\n  circuit_breaker:\n    error_rate: 1.5\n",
    ))
    .unwrap();
    let errors = c.check().unwrap_err().0;
    assert!(errors
        .iter()
        .any(|e| e.key == "webservice.circuit_breaker.error_rate"));

    let c = Config::parse(&minimal(
        "webservice:\n  function_policy:\n    - path: /x\n",
    ))
    .unwrap();
    let errors = c.check().unwrap_err().0;
    assert!(errors
        .iter()
        .any(|e| e.key == "webservice.function_policy[0]"));
}

#[test]
fn tls_files_must_exist() {
    let text = minimal("").replace(
        "    - addr: \"127.0.0.1:8080\"\n",
        "    - addr: \"127.0.0.1:8443\"\n      tls:\n        certificates:\n          - cert_file: /nonexistent/a.pem\n            key_file: /nonexistent/a.key\n",
    );
    let errors = Config::parse(&text).unwrap().check().unwrap_err().0;
    assert!(errors
        .iter()
        .any(|e| e.key == "server.listen[0].tls.certificates[0].cert_file"));
}

#[test]
fn empty_and_broken_yaml_are_errors_not_panics() {
    assert!(Config::parse("").is_err());
    assert!(Config::parse("server: [").is_err());
    assert!(Config::parse("- 1\n- 2\n").is_err());
    assert!(Config::parse("\u{0}\u{1}").is_err());
}

#[test]
fn documented_off_loads_as_written() {
    // YAML 1.1 reads a bare `off` as a boolean; the README's tables write `target: off`.
    let c = Config::parse(&minimal(
        "log:\n  access:\n    target: off\n  audit:\n    target: off\n",
    ))
    .unwrap();
    assert_eq!(c.log.access.target, SinkTarget::Off);
    assert_eq!(c.log.audit.target, SinkTarget::Off);
}

#[test]
fn yaml_booleans_and_numbers_keep_their_text_in_string_keys() {
    // A bare word or number where the schema wants text is that text, spelled as written.
    let c = Config::parse(&minimal(
        "store:\n  redis_key_prefix: 0123\nwebservice:\n  extra_entry_points: [/on]\n",
    ))
    .unwrap();
    assert_eq!(c.store.redis_key_prefix, "0123");
    // And a boolean key takes the YAML 1.1 words an operator writes.
    let c = Config::parse(&minimal("").replace(
        "    - addr: \"127.0.0.1:8080\"\n",
        "    - addr: \"127.0.0.1:8080\"\n      http2: no\n      redirect_to_https: yes\n",
    ))
    .unwrap();
    assert!(!c.server.listen[0].http2);
    assert!(c.server.listen[0].redirect_to_https);
}

#[test]
fn a_bare_number_for_a_duration_says_what_to_write() {
    let e = Config::parse(
        &minimal("upstream:\n  url: \"http://127.0.0.1:8081\"\n  health_check:\n    interval: 5\n")
            .replace(
                "upstream:\n  url: \"http://127.0.0.1:8081\"\nmoodle",
                "moodle",
            ),
    )
    .unwrap_err();
    assert_eq!(e.key, "upstream.health_check.interval");
    assert!(e.message.contains("\"5s\""), "{e}");
}

#[test]
fn a_bare_number_for_a_rate_says_what_to_write() {
    let e = Config::parse(&minimal(
        "webservice:\n  rate_limits:\n    - key: token\n      rate: 60\n",
    ))
    .unwrap_err();
    assert_eq!(e.key, "webservice.rate_limits[0].rate");
    assert!(e.message.contains("\"60/min\""), "{e}");
}

#[test]
fn a_bad_listen_address_is_quoted_in_the_error() {
    let e = Config::parse(&minimal("").replace("127.0.0.1:8080", "127.0.0.1:99999")).unwrap_err();
    assert_eq!(e.key, "server.listen[0].addr");
    assert!(e.message.contains("127.0.0.1:99999"), "{e}");
    assert!(e.message.contains("port"), "{e}");
    let e = Config::parse(&minimal("").replace("\"127.0.0.1:8080\"", "8080")).unwrap_err();
    assert_eq!(e.key, "server.listen[0].addr");
    assert!(e.message.contains("\"0.0.0.0:8080\""), "{e}");
}

#[test]
fn a_word_for_a_boolean_says_what_to_write() {
    let e = Config::parse(&minimal("").replace(
        "    - addr: \"127.0.0.1:8080\"\n",
        "    - addr: \"127.0.0.1:8080\"\n      http2: maybe\n",
    ))
    .unwrap_err();
    assert_eq!(e.key, "server.listen[0].http2");
    assert!(e.message.contains("true or false"), "{e}");
}
