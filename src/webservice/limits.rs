//! Rate limits: one GCRA limiter (governor) per configured rule.
//!
//! A call must pass every rule that applies to it. Rules are checked in config order and each
//! check takes a cell from its bucket, so a call refused by a later rule has still been counted
//! by earlier ones: the usual price of independent limiters, and harmless (a refused client was
//! over a limit anyway).
//!
//! Which rules apply: an `ip` rule to every call; a `token` rule to calls that carry a token (a
//! token-less call is refused by Moodle, except /login/token.php, which `ip` rules cover: put one
//! without `functions` in place to slow password guessing there); a `function` rule to calls
//! naming a function. A rule with `functions` applies only to calls naming a matching function.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use sha2::{Digest, Sha256};

use crate::store::gcra::GcraBucket;
use crate::webservice::config::{LimitKey, RateLimitRule};
use crate::webservice::policy::Patterns;

enum Limiter {
    /// Keyed by normalised token or function name.
    Named(DefaultKeyedRateLimiter<String>),
    Ip(DefaultKeyedRateLimiter<IpAddr>),
}

struct Rule {
    name: Arc<str>,
    key: LimitKey,
    functions: Option<Patterns>,
    limiter: Limiter,
    /// The same quota for the Redis GCRA (see `buckets`): time one call uses up ...
    interval: Duration,
    /// ... and how far ahead the bucket may run (`interval * (burst - 1)`, as in governor).
    tolerance: Duration,
    /// Names this rule's buckets in Redis: the rule name, made unique among the rules.
    redis_name: String,
}

/// A refusal: which rule, and how long until a call would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limited {
    pub rule: Arc<str>,
    pub retry_after: Duration,
}

pub(crate) struct RateLimits {
    rules: Vec<Rule>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Errors name the key: `(key path, message)`.
    pub(crate) fn new(rules: &[RateLimitRule]) -> Result<RateLimits, (String, String)> {
        let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let burst = NonZeroU32::new(r.burst).ok_or_else(|| {
                (
                    format!("webservice.rate_limits[{i}].burst"),
                    "must be at least 1".to_string(),
                )
            })?;
            let quota = Quota::with_period(r.rate.interval())
                .ok_or_else(|| {
                    (
                        format!("webservice.rate_limits[{i}].rate"),
                        "is too fast (interval rounds to zero)".to_string(),
                    )
                })?
                .allow_burst(burst);
            let name: Arc<str> = match (&r.name, &r.functions) {
                (Some(n), _) => n.as_str().into(),
                (None, None) => r.key.as_str().into(),
                (None, Some(f)) => format!("{}:{}", r.key.as_str(), f.join(",")).into(),
            };
            let limiter = match r.key {
                LimitKey::Ip => Limiter::Ip(RateLimiter::keyed(quota)),
                LimitKey::Token | LimitKey::Function => Limiter::Named(RateLimiter::keyed(quota)),
            };
            // Two rules with one name (the same key and functions twice) must not share buckets.
            let twins = out.iter().filter(|o| o.name == name).count();
            let redis_name = if twins == 0 {
                name.to_string()
            } else {
                format!("{name}#{twins}")
            };
            let interval = r.rate.interval();
            out.push(Rule {
                name,
                key: r.key,
                functions: r.functions.as_deref().map(Patterns::new),
                limiter,
                interval,
                tolerance: interval.saturating_mul(burst.get() - 1),
                redis_name,
            });
        }
        Ok(RateLimits {
            rules: out,
            clock: DefaultClock::default(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The exact function names the rules mention (for metric labels).
    pub(crate) fn function_names(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter_map(|r| r.functions.as_ref())
            .flat_map(|p| p.exact_names())
    }

    /// The subject of `rule` for this call, or None when the rule does not apply to it.
    fn subject<'a>(
        rule: &Rule,
        token: Option<&'a String>,
        function: Option<&'a String>,
    ) -> Option<Option<&'a String>> {
        if let Some(patterns) = &rule.functions {
            if !function.is_some_and(|f| patterns.matches(f)) {
                return None;
            }
        }
        match rule.key {
            LimitKey::Ip => Some(None),
            LimitKey::Token => token.map(Some),
            LimitKey::Function => function.map(Some),
        }
    }

    /// The Redis buckets this call must pass, in rule order (the shared form of `check`), each
    /// with the index of its rule for [`RateLimits::refusal`]. Tokens appear only hashed: a
    /// key name is visible to anyone who may run KEYS or MONITOR.
    pub(crate) fn buckets(
        &self,
        token: Option<&String>,
        function: Option<&String>,
        ip: IpAddr,
    ) -> Vec<(usize, GcraBucket)> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(subject) = Self::subject(rule, token, function) else {
                continue;
            };
            let value = match (rule.key, subject) {
                (LimitKey::Ip, _) | (_, None) => ip.to_string(),
                (LimitKey::Token, Some(t)) => hashed(t),
                (LimitKey::Function, Some(f)) if plain_name(f) => f.clone(),
                (LimitKey::Function, Some(f)) => hashed(f),
            };
            out.push((
                i,
                GcraBucket {
                    key: format!("rl:{}:{}", rule.redis_name, value),
                    interval: rule.interval,
                    tolerance: rule.tolerance,
                },
            ));
        }
        out
    }

    /// The refusal of rule `index`, as `check` reports it.
    pub(crate) fn refusal(&self, index: usize, retry_after: Duration) -> Limited {
        Limited {
            rule: self
                .rules
                .get(index)
                .map(|r| r.name.clone())
                .unwrap_or_else(|| "unknown".into()),
            retry_after,
        }
    }

    /// Checks (and counts) one call against every rule that applies.
    pub(crate) fn check(
        &self,
        token: Option<&String>,
        function: Option<&String>,
        ip: IpAddr,
    ) -> Result<(), Limited> {
        for rule in &self.rules {
            let Some(subject) = Self::subject(rule, token, function) else {
                continue;
            };
            let outcome = match (&rule.limiter, subject) {
                (Limiter::Ip(l), _) => l.check_key(&ip),
                (Limiter::Named(l), Some(value)) => l.check_key(value),
                (Limiter::Named(_), None) => continue,
            };
            if let Err(not_until) = outcome {
                return Err(Limited {
                    rule: rule.name.clone(),
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        Ok(())
    }

    /// Drops keys whose bucket is full again (they behave exactly like unseen keys) and returns
    /// the memory: without this every token and IP ever seen stays in the maps.
    pub(crate) fn housekeeping(&self) {
        for rule in &self.rules {
            match &rule.limiter {
                Limiter::Named(l) => {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                Limiter::Ip(l) => {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
            }
        }
    }

    #[cfg(test)]
    /// Keys held across all limiters (tests and debugging).
    pub(crate) fn keys(&self) -> usize {
        self.rules
            .iter()
            .map(|r| match &r.limiter {
                Limiter::Named(l) => l.len(),
                Limiter::Ip(l) => l.len(),
            })
            .sum()
    }
}

/// 128 bits of SHA-256 in hex: keys stay apart, the value cannot be read back.
fn hashed(value: &str) -> String {
    hex::encode(&Sha256::digest(value.as_bytes())[..16])
}

/// A function name that can stand in a key as it is.
fn plain_name(f: &str) -> bool {
    f.len() <= 100
        && f.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::Rate;

    fn rule(
        key: LimitKey,
        count: u32,
        per_s: u64,
        burst: u32,
        functions: Option<&[&str]>,
    ) -> RateLimitRule {
        RateLimitRule {
            key,
            rate: Rate {
                count,
                per: Duration::from_secs(per_s),
            },
            burst,
            functions: functions.map(|l| l.iter().map(|s| s.to_string()).collect()),
            name: None,
        }
    }
    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn burst_then_retry_after() {
        let l = RateLimits::new(&[rule(LimitKey::Token, 1, 60, 3, None)]).unwrap();
        let t = "abc".to_string();
        for _ in 0..3 {
            assert!(l.check(Some(&t), None, IP).is_ok());
        }
        let refused = l.check(Some(&t), None, IP).unwrap_err();
        assert_eq!(&*refused.rule, "token");
        assert!(refused.retry_after > Duration::from_secs(58));
        assert!(refused.retry_after <= Duration::from_secs(60));
        // Another token has its own bucket; token-less calls skip token rules.
        assert!(l.check(Some(&"other".to_string()), None, IP).is_ok());
        assert!(l.check(None, None, IP).is_ok());
    }

    #[test]
    fn function_filters_and_every_rule_applies() {
        let l = RateLimits::new(&[
            rule(LimitKey::Ip, 100, 1, 100, None),
            rule(LimitKey::Function, 1, 60, 1, Some(&["core_user_*"])),
        ])
        .unwrap();
        let f = "core_user_create_users".to_string();
        let g = "core_course_get_courses".to_string();
        assert!(l.check(None, Some(&f), IP).is_ok());
        let refused = l.check(None, Some(&f), IP).unwrap_err();
        assert_eq!(&*refused.rule, "function:core_user_*");
        assert!(l.check(None, Some(&g), IP).is_ok());
        assert!(l.check(None, None, IP).is_ok());
    }

    #[test]
    fn housekeeping_forgets_idle_keys() {
        let l = RateLimits::new(&[rule(LimitKey::Ip, 1000, 1, 1, None)]).unwrap();
        for i in 0..50u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i));
            assert!(l.check(None, None, ip).is_ok());
        }
        assert_eq!(l.keys(), 50);
        std::thread::sleep(Duration::from_millis(5));
        l.housekeeping();
        assert_eq!(l.keys(), 0);
    }

    #[test]
    fn redis_buckets_follow_the_rules_and_hide_tokens() {
        let l = RateLimits::new(&[
            rule(LimitKey::Token, 60, 60, 10, None),
            rule(LimitKey::Token, 60, 60, 10, None),
            rule(LimitKey::Function, 6, 60, 2, Some(&["core_course_*"])),
            rule(LimitKey::Ip, 1, 1, 1, None),
        ])
        .unwrap();
        let t = "0123456789abcdef0123456789abcdef".to_string();
        let f = "core_course_search_courses".to_string();
        let b = l.buckets(Some(&t), Some(&f), IP);
        let keys: Vec<&str> = b.iter().map(|(_, b)| b.key.as_str()).collect();
        assert_eq!(keys.len(), 4);
        assert!(keys[0].starts_with("rl:token:") && !keys[0].contains(&t));
        assert!(keys[1].starts_with("rl:token#1:"), "twin rules stay apart");
        assert_eq!(
            keys[2],
            "rl:function:core_course_*:core_course_search_courses"
        );
        assert_eq!(keys[3], "rl:ip:127.0.0.1");
        assert_eq!(b[0].1.interval, Duration::from_secs(1));
        assert_eq!(b[0].1.tolerance, Duration::from_secs(9));
        assert_eq!(b[2].1.tolerance, Duration::from_secs(10));
        // Without a token or a matching function only the ip rule applies.
        let b = l.buckets(None, Some(&"core_user_x".to_string()), IP);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, 3);
        assert_eq!(&*l.refusal(3, Duration::ZERO).rule, "ip");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = RateLimits::new(&[rule(LimitKey::Ip, 1, 1, 0, None)])
            .err()
            .unwrap();
        assert_eq!(err.0, "webservice.rate_limits[0].burst");
    }
}
