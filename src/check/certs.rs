//! The TLS listeners' certificates: do they cover the site's name (wwwroot's host), and how
//! long each has left.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Line, Verdict};
use crate::config::Config;
use crate::server::tls::{certificate_names, read_chain};

pub(super) fn check(config: &Config, min_days: u32) -> Vec<Line> {
    let mut lines = Vec::new();
    let site = url::Url::parse(&config.moodle.wwwroot)
        .ok()
        .filter(|u| u.scheme() == "https")
        .and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase()));
    let mut covered = false;
    let mut any = false;
    for (i, l) in config.server.listen.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        for (j, c) in tls.certificates.iter().enumerate() {
            any = true;
            let key = format!("server.listen[{i}].tls.certificates[{j}]");
            let chain = match read_chain(&c.cert_file) {
                Ok(chain) => chain,
                Err(e) => {
                    lines.push(Line::new(Verdict::Fail, key, e));
                    continue;
                }
            };
            let names = certificate_names(&chain[0]).unwrap_or_default();
            if let Some(site) = &site {
                covered |= names.iter().any(|n| name_matches(n, site));
            }
            lines.push(expiry_line(key, &chain[0], &names, min_days));
        }
    }
    if let Some(site) = site {
        if !any {
            lines.push(Line::new(
                Verdict::Ok,
                "tls",
                format!("no TLS listener, and wwwroot is https://{site}: TLS must end in front of this proxy"),
            ));
        } else if covered {
            lines.push(Line::new(
                Verdict::Ok,
                "tls names",
                format!("a certificate covers {site} (wwwroot's host)"),
            ));
        } else {
            lines.push(Line::new(
                Verdict::Fail,
                "tls names",
                format!(
                    "no certificate covers {site} (wwwroot's host): browsers will refuse the site"
                ),
            ));
        }
    }
    lines
}

/// A certificate name matches a host exactly, or as a one-label wildcard (`*.example.edu`).
fn name_matches(name: &str, host: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

fn expiry_line(
    key: String,
    der: &rustls::pki_types::CertificateDer<'_>,
    names: &[String],
    min_days: u32,
) -> Line {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return Line::new(Verdict::Fail, key, "not an X.509 certificate");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let validity = cert.validity();
    let left = validity.not_after.timestamp() - now;
    let days = left.div_euclid(86_400);
    let names = names.join(", ");
    if validity.not_before.timestamp() > now {
        Line::new(
            Verdict::Fail,
            key,
            format!("[{names}] is not valid yet (from {})", validity.not_before),
        )
    } else if left <= 0 {
        Line::new(
            Verdict::Fail,
            key,
            format!("[{names}] expired on {}", validity.not_after),
        )
    } else if days < i64::from(min_days) {
        Line::new(
            Verdict::Warn,
            key,
            format!(
                "[{names}] has {days} days left (under {min_days}), until {}",
                validity.not_after
            ),
        )
    } else {
        Line::new(
            Verdict::Ok,
            key,
            format!(
                "[{names}] has {days} days left, until {}",
                validity.not_after
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("lms.example.edu", "lms.example.edu"));
        assert!(name_matches("*.example.edu", "lms.example.edu"));
        assert!(!name_matches("*.example.edu", "a.lms.example.edu"));
        assert!(!name_matches("*.example.edu", "example.edu"));
        assert!(!name_matches("lms.example.edu", "evil-lms.example.edu"));
    }
}
