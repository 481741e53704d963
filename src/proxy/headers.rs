//! Header rules shared by both directions: hop-by-hop headers (RFC 9110 §7.6.1) never cross the
//! proxy, headers only the proxy may set are stripped from clients, and X-Forwarded-* says who
//! the client was.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

// Names used on every request, parsed once (a `&str` name is parsed and hashed on each use).
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Hop-by-hop headers, always removed, plus whatever `Connection` names.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The index of `name` in `HOP_BY_HOP`. A match on the name's text (the compiler switches on
/// its length first) instead of nine `HeaderName` comparisons: this runs for every header of
/// every request and response.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "te" => Some(1),
        "trailer" => Some(2),
        "transfer-encoding" => Some(3),
        "upgrade" => Some(4),
        "proxy-authorization" => Some(5),
        "proxy-authenticate" => Some(6),
        "keep-alive" => Some(7),
        "proxy-connection" => Some(8),
        _ => None,
    }
}

/// True for the headers that are always hop-by-hop (not counting those `Connection` names).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Removes hop-by-hop headers. `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for a
/// WebSocket handshake, which must reach the other side.
///
/// One pass over the names marks which hop-by-hop headers are present (most messages carry
/// only `Connection`), then only those are removed: cheaper than a hashed `remove` for every
/// name on the list, and nothing is allocated unless `Connection` names a header that is not
/// hop-by-hop already (this runs twice per request).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) else {
                continue;
            };
            if hop_by_hop_index(&name).is_none() {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(&name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) == 0 {
            continue;
        }
        if keep_upgrade && (*name == header::CONNECTION || *name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// True for the offload controls: the headers by which an upstream asks its front server for a
/// file (nginx's `X-Accel-*`, Apache's and lighttpd's `X-Sendfile` family). Only the upstream
/// may send them, and they never reach a client, acted on or not (as nginx does). The one list
/// the sanitize stage, both upstream paths and the file offload use.
pub(crate) fn is_offload_control(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-")
        && (n.starts_with("x-accel-")
            || n == "x-sendfile"
            || n == "x-sendfile-type"
            || n == "x-lighttpd-send-file")
}

/// Removes the offload controls from an answer.
pub(crate) fn strip_offload_controls(headers: &mut HeaderMap) {
    // Collected only when one is there (nearly no answer carries one).
    if !headers.keys().any(is_offload_control) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_offload_control(n))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// True when the header is one a client must never set: the offload controls (only the
/// upstream may ask for an offload) and the identity headers moodle-edge itself sets.
pub(crate) fn is_reserved_request_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    // Every reserved name starts with "x-"; most names a browser sends do not.
    if !n.starts_with("x-") {
        return false;
    }
    is_offload_control(name) || n.starts_with("x-moodle-edge-")
}

/// Removes the headers a client must never set; returns how many. The sanitize stage calls it
/// only when its scan of the header kinds found one (collecting none allocates nothing).
pub(crate) fn strip_reserved_request_headers(headers: &mut HeaderMap) -> usize {
    let reserved: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_reserved_request_header(n))
        .cloned()
        .collect();
    let count = reserved.len();
    for name in reserved {
        headers.remove(name);
    }
    count
}

/// Who the client is, once the trusted proxies in front of us are accounted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    /// The X-Forwarded-For chain to send upstream: what trusted proxies told us, then the peer;
    /// None when that is the peer alone (the usual case, with no proxy in front).
    pub forwarded_for: Option<String>,
    /// A trusted proxy in front of us said the original scheme was this.
    pub forwarded_proto: Option<String>,
}

pub(crate) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Works out the client address. The incoming X-Forwarded-For is believed only when the peer is
/// a trusted proxy; then the chain is walked from the right, skipping trusted hops, and the first
/// untrusted address is the client (the same rule as nginx's real_ip_recursive).
///
/// `peer_text` is the peer's address as text, formatted once per connection.
pub(crate) fn client_addr(
    peer: IpAddr,
    peer_text: &str,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> ClientAddr {
    if !is_trusted(peer, trusted) {
        return ClientAddr {
            ip: peer,
            forwarded_for: None,
            forwarded_proto: None,
        };
    }
    let chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut client = peer;
    for hop in chain.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            // Garbage in the chain: stop believing it here.
            Err(_) => break,
        }
    }
    let forwarded_for = (!chain.is_empty()).then(|| format!("{}, {peer_text}", chain.join(", ")));
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https");
    ClientAddr {
        ip: client,
        forwarded_for,
        forwarded_proto,
    }
}

/// The headers moodle-edge adds to every request it forwards: X-Forwarded-For/-Proto/-Host,
/// X-Real-IP and X-Request-Id. They travel beside the request's own headers instead of being
/// inserted into its map: the direct path writes them straight into the request head it sends
/// (no hashing, no regrowth of the map), the pooled path inserts them (`insert_into`). Whatever
/// the client sent under these names (and `Forwarded`) is removed by the sanitize stage.
#[derive(Debug, Clone)]
pub struct ForwardHeaders {
    pub x_forwarded_for: Option<HeaderValue>,
    pub x_forwarded_proto: HeaderValue,
    /// None when the request named no host (HTTP/1.0 without Host).
    pub x_forwarded_host: Option<HeaderValue>,
    pub x_real_ip: Option<HeaderValue>,
    /// Set by the pipeline once the request id is known.
    pub x_request_id: Option<HeaderValue>,
}

impl Default for ForwardHeaders {
    /// Nothing but the scheme: what a request has before the sanitize stage ran.
    fn default() -> Self {
        ForwardHeaders {
            x_forwarded_for: None,
            x_forwarded_proto: HeaderValue::from_static("http"),
            x_forwarded_host: None,
            x_real_ip: None,
            x_request_id: None,
        }
    }
}

impl ForwardHeaders {
    /// The headers as ("lower-case name: ", value) pairs, in the order they are sent.
    fn pairs(&self) -> [(&'static str, Option<&HeaderValue>); 5] {
        [
            ("x-forwarded-for: ", self.x_forwarded_for.as_ref()),
            ("x-forwarded-proto: ", Some(&self.x_forwarded_proto)),
            ("x-forwarded-host: ", self.x_forwarded_host.as_ref()),
            ("x-real-ip: ", self.x_real_ip.as_ref()),
            ("x-request-id: ", self.x_request_id.as_ref()),
        ]
    }

    /// Whether the request carries a Host header: the sanitize stage leaves one exactly when
    /// the request named a host (HTTP/2's :authority becomes one), and only then is there an
    /// X-Forwarded-Host.
    pub fn request_has_host(&self) -> bool {
        self.x_forwarded_host.is_some()
    }

    /// Puts the headers into a request's map (the pooled path).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        let names = [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REAL_IP,
            X_REQUEST_ID,
        ];
        for (name, (_, value)) in names.into_iter().zip(self.pairs()) {
            if let Some(v) = value {
                headers.insert(name, v.clone());
            }
        }
    }

    /// Writes the headers as HTTP/1.1 header lines (the direct path).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in self.pairs() {
            if let Some(v) = value {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The bytes `write_to` writes, at most.
    pub fn encoded_len(&self) -> usize {
        self.pairs()
            .iter()
            .map(|(n, v)| v.map_or(0, |v| n.len() + v.len() + 2))
            .sum()
    }
}

/// The forwarding headers for a request, written into `out` (the request context's), its
/// X-Request-Id left as it is: the sanitize stage fills the context in place rather than moving
/// a copy into it. `peer_value` is the peer's address as a header value, made once per
/// connection: with no trusted proxy in front (the usual case) X-Forwarded-For and X-Real-IP are
/// both that value. `host` is the sanitized Host (empty when none), shared with X-Forwarded-Host.
pub(crate) fn write_forward_headers(
    client: &ClientAddr,
    peer_value: &HeaderValue,
    proto: &str,
    host: &HeaderValue,
    out: &mut ForwardHeaders,
) {
    let (forwarded_for, is_chain) = match &client.forwarded_for {
        None => (Some(peer_value.clone()), false),
        Some(chain) => (HeaderValue::from_str(chain).ok(), true),
    };
    out.x_forwarded_proto = match client.forwarded_proto.as_deref().unwrap_or(proto) {
        "https" => HeaderValue::from_static("https"),
        _ => HeaderValue::from_static("http"),
    };
    out.x_forwarded_host = (!host.is_empty()).then(|| host.clone());
    // With no trusted proxy in front, the chain is just the client: one value for both.
    out.x_real_ip = match (&forwarded_for, is_chain) {
        (Some(v), false) => Some(v.clone()),
        _ => HeaderValue::from_str(&client.ip.to_string()).ok(),
    };
    out.x_forwarded_for = forwarded_for;
}

/// The kinds of request header the sanitize stage acts on, found in one pass over the names
/// (most requests carry none of them, and then the stage skips its rarer fixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderKinds(u8);

impl HeaderKinds {
    const HOP_BY_HOP: u8 = 1;
    const RESERVED: u8 = 2;
    const FORWARDING: u8 = 4;
    const TRANSFER_ENCODING: u8 = 8;
    const CONTENT_LENGTH: u8 = 16;

    /// Every kind: makes the stage check everything (tests, and callers without a scan).
    pub const ALL: HeaderKinds = HeaderKinds(u8::MAX);

    /// A hop-by-hop header (Transfer-Encoding included).
    pub fn hop_by_hop(self) -> bool {
        self.0 & Self::HOP_BY_HOP != 0
    }
    /// A header a client must never set (see `is_reserved_request_header`).
    pub fn reserved(self) -> bool {
        self.0 & Self::RESERVED != 0
    }
    /// A header the proxy sets itself (see `ForwardHeaders`), or `Forwarded`.
    pub fn forwarding(self) -> bool {
        self.0 & Self::FORWARDING != 0
    }
    /// `Transfer-Encoding` or `Content-Length`: the body's framing must be checked.
    pub fn framing(self) -> bool {
        self.0 & (Self::TRANSFER_ENCODING | Self::CONTENT_LENGTH) != 0
    }
}

/// Which kinds of header the map holds.
pub fn request_header_kinds(headers: &HeaderMap) -> HeaderKinds {
    let mut found = 0;
    for name in headers.keys() {
        found |= match name.as_str() {
            "forwarded" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
            | "x-real-ip" | "x-request-id" => HeaderKinds::FORWARDING,
            "content-length" => HeaderKinds::CONTENT_LENGTH,
            "transfer-encoding" => HeaderKinds::HOP_BY_HOP | HeaderKinds::TRANSFER_ENCODING,
            _ if hop_by_hop_index(name).is_some() => HeaderKinds::HOP_BY_HOP,
            _ if is_reserved_request_header(name) => HeaderKinds::RESERVED,
            _ => 0,
        };
    }
    HeaderKinds(found)
}

/// Removes what a client sent under the names of the forwarding headers.
pub(crate) fn remove_forwarding(headers: &mut HeaderMap) {
    for name in [
        FORWARDED,
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        X_REAL_IP,
        X_REQUEST_ID,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_index_matches_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [
            "host",
            "content-length",
            "x-connection",
            "keep-alive2",
            "tee",
        ] {
            let name = HeaderName::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(&name), None, "{other}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-type", "text/html"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn reserved_headers_are_stripped() {
        let mut h = map(&[
            ("x-accel-redirect", "/moodledata-internal/x"),
            ("X-Sendfile", "/etc/passwd"),
            ("x-moodle-edge-user", "admin"),
            ("x-other", "ok"),
        ]);
        assert_eq!(strip_reserved_request_headers(&mut h), 3);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn untrusted_peer_forwarded_for_is_ignored() {
        let h = map(&[("x-forwarded-for", "1.2.3.4")]);
        let c = client_addr("10.0.0.9".parse().unwrap(), "10.0.0.9", &h, &[]);
        assert_eq!(c.ip.to_string(), "10.0.0.9");
        assert_eq!(c.forwarded_for, None);
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = client_addr("10.0.0.9".parse().unwrap(), "10.0.0.9", &h, &trusted);
        assert_eq!(c.ip.to_string(), "1.2.3.4");
        assert_eq!(
            c.forwarded_for.as_deref(),
            Some("6.6.6.6, 1.2.3.4, 10.0.0.5, 10.0.0.9")
        );
        assert_eq!(c.forwarded_proto.as_deref(), Some("https"));
    }

    #[test]
    fn garbage_in_a_trusted_chain_stops_the_walk() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        let c = client_addr("10.0.0.9".parse().unwrap(), "10.0.0.9", &h, &trusted);
        assert_eq!(c.ip.to_string(), "10.0.0.9");
    }
}
