//! The value types the YAML uses for durations ("250ms", "30s"), rates ("60/min") and sizes
//! ("64KiB"). They are parsed strictly: a typo is a config error, never a silent default.
//!
//! Written here rather than taken from a crate: humantime accepts forms the contract does not
//! ("1min 30s", "2 days"), bytesize accepts decimal and binary suffixes interchangeably, and the
//! contract's rate syntax has no crate at all. Each parser is a dozen lines with unit tests.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration as StdDuration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as a number followed by a unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }
    pub fn get(self) -> StdDuration {
        self.0
    }
}

/// Parses "250ms", "30s", "5m", "2h", "1d". A bare number is refused: the unit is what an
/// operator reads, and guessing seconds or milliseconds is how timeouts end up 1000x off.
pub(crate) fn parse_duration(text: &str) -> Result<StdDuration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("duration {text:?} has no unit: write a duration such as \"{text}s\" (units ms, s, m, h, d)")
    })?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "duration {text:?} has an unknown unit {unit:?} (use ms, s, m, h or d)"
            ))
        }
    };
    value
        .checked_mul(millis_per_unit)
        .map(StdDuration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(Duration)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// A socket address `ip:port`; an error quotes the value and says which part is wrong
/// (std's parser says only "invalid socket address syntax").
pub(crate) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.trim().parse() {
        return Ok(addr);
    }
    let text = text.trim();
    if text.parse::<u16>().is_ok() {
        return Err(format!(
            "{text:?} is a port alone: write an address and a port, such as \"0.0.0.0:{text}\" or \"127.0.0.1:{text}\""
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not an address:port (such as \"127.0.0.1:8080\" or \"[::]:443\")"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{text:?} has port {port:?}, which is not a number from 0 to 65535"
        ));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_err() {
        return Err(format!(
            "{text:?} has {host:?}, which is not an IP address (a host name is not accepted here; IPv6 goes in brackets: \"[::1]:8080\")"
        ));
    }
    Err(format!(
        "{text:?} is not an address:port (IPv6 goes in brackets: \"[::1]:8080\")"
    ))
}

/// `#[serde(deserialize_with)]` for a socket address key.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_socket_addr(&text).map_err(de::Error::custom)
}

/// `#[serde(deserialize_with)]` for an optional socket address key.
pub(crate) fn opt_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| parse_socket_addr(&t).map_err(de::Error::custom))
        .transpose()
}

/// A rate written as "N/s", "N/min" or "N/h": N events per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: StdDuration,
}

impl Rate {
    /// The time between two events at a steady pace (the GCRA emission interval).
    pub fn interval(&self) -> StdDuration {
        self.per / self.count
    }
}

pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let (count, period) = text
        .split_once('/')
        .ok_or_else(|| format!("rate {text:?} must look like \"60/min\" (N/s, N/min or N/h)"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("rate {text:?} must start with a whole number"))?;
    if count == 0 {
        return Err(format!("rate {text:?} must be at least 1 per period"));
    }
    let per = match period.trim() {
        "s" | "sec" | "second" => StdDuration::from_secs(1),
        "m" | "min" | "minute" => StdDuration::from_secs(60),
        "h" | "hour" => StdDuration::from_secs(3600),
        other => {
            return Err(format!(
                "rate {text:?} has an unknown period {other:?} (use s, min or h)"
            ))
        }
    };
    Ok(Rate { count, per })
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rate(&text).map_err(de::Error::custom)
    }
}

/// A size in bytes, written as a number of bytes or with a binary suffix: B, KiB, MiB, GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("size {text:?} must start with a whole number"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "size {text:?} has an unknown unit {other:?} (use B, KiB, MiB or GiB)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size like \"64KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("250ms").unwrap(),
            StdDuration::from_millis(250)
        );
        assert_eq!(parse_duration("30s").unwrap(), StdDuration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), StdDuration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), StdDuration::from_secs(7200));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("30 sec").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn socket_addrs() {
        assert_eq!(
            parse_socket_addr("[::1]:443").unwrap(),
            "[::1]:443".parse::<SocketAddr>().unwrap()
        );
        let e = parse_socket_addr("127.0.0.1:99999").unwrap_err();
        assert!(
            e.contains("\"127.0.0.1:99999\"") && e.contains("port \"99999\""),
            "{e}"
        );
        let e = parse_socket_addr("lms.example.edu:80").unwrap_err();
        assert!(e.contains("not an IP address"), "{e}");
        let e = parse_socket_addr("::1:80").unwrap_err();
        assert!(e.contains("brackets"), "{e}");
        assert!(parse_socket_addr("8080")
            .unwrap_err()
            .contains("\"0.0.0.0:8080\""));
        assert!(parse_socket_addr("").is_err());
    }

    #[test]
    fn rates() {
        let r = parse_rate("60/min").unwrap();
        assert_eq!(r.count, 60);
        assert_eq!(r.interval(), StdDuration::from_secs(1));
        assert_eq!(
            parse_rate("10/s").unwrap().interval(),
            StdDuration::from_millis(100)
        );
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10/fortnight").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("10").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("64KB").is_err());
        assert!(parse_size("KiB").is_err());
    }
}
