//! Reading `wstoken` / `token`, `wsfunction` and `moodlewsrestformat` the way PHP and Moodle do.
//!
//! Moodle merges GET and POST with POST winning, and PHP lets the last of two equal keys win.
//! The edge reproduces that, with three safety rules, because a mismatch between what the edge
//! checks and what Moodle executes is a policy bypass:
//! * keys are compared after PHP's own key handling (percent-decoding, `+` as space, leading
//!   spaces dropped, cut at NUL), so `%77sfunction=` is `wsfunction=`;
//! * a key seen twice with different values marks the parameters *ambiguous* (PHP's
//!   `max_input_vars` could make it keep either);
//! * when the body was only partly read (`max_inspect_body`), a value could still hide in the
//!   unread part, so the result says *incomplete* and the guard fails closed where it matters.
//!
//! The body itself is never changed: [`inspect_body`] hands back a body that replays the bytes
//! it read, then the untouched rest of the stream.

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::body::replay::{read_prefix, Prefix, ReplayBody};
use crate::body::{BoxError, ProxyBody};
use crate::webservice::entry::EntryKind;
use crate::webservice::entry::WsFormat;
use crate::webservice::token;

/// The parameters found in one source (query string or body). Holds only the four keys the guard
/// needs, nothing else is kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryParams {
    pub wstoken: Option<String>,
    pub token: Option<String>,
    pub wsfunction: Option<String>,
    pub moodlewsrestformat: Option<String>,
    /// A key appeared twice with different values.
    pub ambiguous: bool,
}

/// What a POST body revealed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyParams {
    pub params: QueryParams,
    /// The whole body was read and parsed: nothing can hide beyond what was seen.
    pub complete: bool,
}

impl BodyParams {
    /// For bodies PHP does not turn into `$_POST` (JSON, XML, none): nothing to find, nothing
    /// hidden.
    pub fn none() -> Self {
        BodyParams {
            params: QueryParams::default(),
            complete: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The client's body failed while being read (reset, timeout in a lower layer).
    #[error("request body could not be read: {0}")]
    Body(#[source] BoxError),
}

#[derive(Clone, Copy)]
enum Key {
    WsToken,
    Token,
    WsFunction,
    Format,
}

impl QueryParams {
    fn set(&mut self, key: Key, value: String) {
        let slot = match key {
            Key::WsToken => &mut self.wstoken,
            Key::Token => &mut self.token,
            Key::WsFunction => &mut self.wsfunction,
            Key::Format => &mut self.moodlewsrestformat,
        };
        if let Some(old) = slot {
            if *old != value {
                self.ambiguous = true;
            }
        }
        *slot = Some(value);
    }
}

/// Scans a query string (or an urlencoded body) for the keys the guard needs. No map is built:
/// each pair's key is compared in place and only the wanted values are decoded.
pub fn query_params(query: &str) -> QueryParams {
    let mut out = QueryParams::default();
    scan_urlencoded(query.as_bytes(), &mut out);
    out
}

fn scan_urlencoded(input: &[u8], out: &mut QueryParams) {
    // memchr: a 4 KB form is mostly skipped, so finding the separators is most of the cost.
    let mut start = 0usize;
    while start <= input.len() {
        let end = memchr::memchr(b'&', &input[start..]).map_or(input.len(), |i| start + i);
        let pair = &input[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if let Some(key) = match_key(raw_key, true) {
            out.set(key, decode_value(raw_value));
        }
    }
}

fn key_of(name: &[u8]) -> Option<Key> {
    match name {
        b"wstoken" => Some(Key::WsToken),
        b"token" => Some(Key::Token),
        b"wsfunction" => Some(Key::WsFunction),
        b"moodlewsrestformat" => Some(Key::Format),
        _ => None,
    }
}

/// PHP's treatment of a variable name: (url-decoded), cut at NUL, leading spaces dropped.
/// Decodes into a small stack buffer and gives up as soon as the name cannot be one of ours,
/// so the many other fields of a big form (`users%5B0%5D%5Busername%5D`) cost a few bytes each.
fn match_key(raw: &[u8], urlencoded: bool) -> Option<Key> {
    const LONGEST: usize = 18; // "moodlewsrestformat"
    let mut buf = [0u8; LONGEST];
    let mut len = 0usize;
    let mut i = 0usize;
    while i < raw.len() {
        let mut b = raw[i];
        i += 1;
        if urlencoded {
            if b == b'+' {
                b = b' ';
            } else if b == b'%' {
                if let (Some(h), Some(l)) = (
                    raw.get(i).copied().and_then(hex_val),
                    raw.get(i + 1).copied().and_then(hex_val),
                ) {
                    b = (h << 4) | l;
                    i += 2;
                }
            }
        }
        if b == 0 {
            break;
        }
        if len == 0 {
            if b == b' ' {
                continue;
            }
            if !matches!(b, b'w' | b't' | b'm') {
                return None;
            }
        }
        if len == LONGEST {
            return None;
        }
        buf[len] = b;
        len += 1;
    }
    key_of(&buf[..len])
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_value(raw: &[u8]) -> String {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The merged view Moodle would act on, in the edge's normal forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// [`token::normalize`]d.
    pub token: Option<String>,
    /// Trimmed and lower-cased (MySQL's default collations match names that way).
    pub function: Option<String>,
    pub format: WsFormat,
    /// False when the body was not read to its end or a key was ambiguous.
    pub complete: bool,
}

/// Merges query and body the way Moodle does (`array_merge($_GET, $_POST)`: POST wins).
pub fn merge(entry: EntryKind, query: &QueryParams, body: Option<&BodyParams>) -> Params {
    let post = body.map(|b| &b.params);
    let pick = |f: fn(&QueryParams) -> &Option<String>| -> Option<String> {
        post.and_then(|p| f(p).clone()).or_else(|| f(query).clone())
    };
    let raw_token = match entry {
        EntryKind::Token => None,
        EntryKind::Pluginfile => pick(|p| &p.token),
        EntryKind::Rest | EntryKind::Soap | EntryKind::XmlRpc => pick(|p| &p.wstoken),
        EntryKind::Extra => pick(|p| &p.wstoken).or_else(|| pick(|p| &p.token)),
    };
    let function = pick(|p| &p.wsfunction)
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty());
    let format = match entry {
        EntryKind::Token => WsFormat::Json,
        _ => match pick(|p| &p.moodlewsrestformat) {
            Some(f) if f.eq_ignore_ascii_case("json") => WsFormat::Json,
            _ => WsFormat::Xml,
        },
    };
    let complete = body.is_none_or(|b| b.complete && !b.params.ambiguous) && !query.ambiguous;
    Params {
        token: raw_token.as_deref().and_then(token::normalize),
        function,
        format,
        complete,
    }
}

enum BodyKind {
    /// An XML-RPC or SOAP call: the function is named inside the XML (`<methodName>`, or the
    /// first element of the SOAP Body), which Moodle's servers read from the raw body whatever
    /// its content type.
    XmlCall,
    Urlencoded,
    Multipart(String),
    /// Multipart without a usable boundary: PHP may still parse something we cannot.
    Unreadable,
    Other,
}

fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Other;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::Urlencoded
    } else if media.eq_ignore_ascii_case("multipart/form-data") {
        match multer::parse_boundary(ct) {
            Ok(b) => BodyKind::Multipart(b),
            Err(_) => BodyKind::Unreadable,
        }
    } else {
        BodyKind::Other
    }
}

/// Reads up to `max` bytes of a form body (urlencoded or multipart), finds the parameters in
/// them, and returns a body that yields exactly the original bytes. Other content types are
/// returned untouched without reading (PHP does not fill `$_POST` from them).
///
/// Memory is bounded by `max` plus one frame. A multipart file part that runs past the buffer
/// just leaves later fields unknown (`complete: false`).
pub async fn inspect_body(
    content_type: Option<&str>,
    body: ProxyBody,
    max: usize,
) -> Result<(BodyParams, ProxyBody), InspectError> {
    inspect(body_kind(content_type), body, max).await
}

#[cfg(test)]
/// [`inspect_body`] for a call to `entry`: XML-RPC and SOAP bodies are read for the function
/// they name, so function policy and per-function limits apply to them too.
pub(crate) async fn inspect_call_body(
    entry: EntryKind,
    content_type: Option<&str>,
    body: ProxyBody,
    max: usize,
) -> Result<(BodyParams, ProxyBody), InspectError> {
    let kind = match entry {
        EntryKind::XmlRpc | EntryKind::Soap => BodyKind::XmlCall,
        _ => body_kind(content_type),
    };
    inspect(kind, body, max).await
}

async fn inspect(
    kind: BodyKind,
    mut body: ProxyBody,
    max: usize,
) -> Result<(BodyParams, ProxyBody), InspectError> {
    if matches!(kind, BodyKind::Other) {
        return Ok((BodyParams::none(), body));
    }
    let mut prefix = Prefix::default();
    read_prefix(&mut body, &mut prefix, max)
        .await
        .map_err(InspectError::Body)?;
    let found = scan(kind, &prefix.contiguous(), prefix.ended).await;
    Ok((found, ReplayBody::new(prefix, body).boxed_unsync()))
}

/// Whether a call's body is read at all: PHP fills `$_POST` only from form bodies, and
/// XML-RPC and SOAP bodies name their function.
pub(crate) fn inspects_body(entry: EntryKind, content_type: Option<&str>) -> bool {
    matches!(entry, EntryKind::XmlRpc | EntryKind::Soap)
        || !matches!(body_kind(content_type), BodyKind::Other)
}

/// What a body's prefix (already read, see `crate::body::replay`) says about a call to
/// `entry`; `ended` is true when the prefix is the whole body.
pub(crate) async fn scan_call_body(
    entry: EntryKind,
    content_type: Option<&str>,
    prefix: &Bytes,
    ended: bool,
) -> BodyParams {
    let kind = match entry {
        EntryKind::XmlRpc | EntryKind::Soap => BodyKind::XmlCall,
        _ => body_kind(content_type),
    };
    if matches!(kind, BodyKind::Other) {
        return BodyParams::none();
    }
    scan(kind, prefix, ended).await
}

async fn scan(kind: BodyKind, prefix: &Bytes, ended: bool) -> BodyParams {
    let mut found = BodyParams::default();
    let parsed_ok = match kind {
        BodyKind::Urlencoded => {
            // A pair cut by the buffer's end could be a truncated value: drop it.
            let usable = if ended {
                &prefix[..]
            } else {
                match prefix.iter().rposition(|&b| b == b'&') {
                    Some(i) => &prefix[..i],
                    None => &b""[..],
                }
            };
            scan_urlencoded(usable, &mut found.params);
            true
        }
        BodyKind::Multipart(boundary) => {
            scan_multipart(prefix.clone(), boundary, &mut found.params).await
        }
        BodyKind::XmlCall => {
            let name = xml_call_function(prefix);
            let named = name.is_some();
            if let Some(name) = name {
                found.params.set(Key::WsFunction, name);
            }
            // A name found in a cut prefix is the call's: it comes before any parameter.
            named || ended
        }
        BodyKind::Unreadable | BodyKind::Other => false,
    };
    found.complete = ended && parsed_ok;
    found
}

/// The function an XML-RPC (`<methodName>f</methodName>`) or SOAP (first element inside the
/// Body, namespace prefix dropped) request names. A plain text scan on the bounded prefix: no
/// XML parser sees untrusted input here, and anything odd just leaves the name unknown.
pub(crate) fn xml_call_function(body: &[u8]) -> Option<String> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).ok()?,
    };
    let name = if let Some((_, rest)) = text.split_once("<methodName>") {
        rest.split_once("</methodName>")?.0.trim()
    } else {
        // <soap:Body ...> or <Body ...>, then the first child element.
        let at = text
            .match_indices("Body")
            .find(|(i, _)| {
                let before = text[..*i].chars().next_back();
                let after = text[i + 4..].chars().next();
                matches!(before, Some('<') | Some(':'))
                    && matches!(
                        after,
                        Some('>') | Some(' ') | Some('\t') | Some('\r') | Some('\n')
                    )
                    && !text[..*i].ends_with("</")
            })
            .map(|(i, _)| i)?;
        let after_body = &text[at..];
        let open = after_body.find('>')? + 1;
        let mut rest = &after_body[open..];
        loop {
            let lt = rest.find('<')?;
            rest = &rest[lt + 1..];
            // Skip comments and processing instructions.
            if rest.starts_with('!') || rest.starts_with('?') {
                rest = &rest[rest.find('>')? + 1..];
                continue;
            }
            break;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        let qualified = &rest[..end];
        qualified.rsplit(':').next().unwrap_or(qualified)
    };
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    ok.then(|| name.to_string())
}

/// Returns false when the parse stopped early (truncated or malformed): later fields unknown.
async fn scan_multipart(prefix: Bytes, boundary: String, out: &mut QueryParams) -> bool {
    let stream = futures_util::stream::iter(std::iter::once(Ok::<Bytes, std::io::Error>(prefix)));
    let mut multipart = multer::Multipart::new(stream, boundary);
    loop {
        match multipart.next_field().await {
            Ok(None) => return true,
            Err(_) => return false,
            Ok(Some(field)) => {
                let key = match (field.name(), field.file_name()) {
                    (Some(name), None) => match_key(name.as_bytes(), false),
                    _ => None,
                };
                if let Some(key) = key {
                    match field.bytes().await {
                        Ok(value) => out.set(key, String::from_utf8_lossy(&value).into_owned()),
                        Err(_) => return false,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use futures_util::stream;
    use http::HeaderMap;
    use http_body::{Body, Frame};
    use http_body_util::StreamBody;

    fn chunked(parts: Vec<&'static [u8]>) -> ProxyBody {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, BoxError>(Frame::data(Bytes::from_static(p))));
        StreamBody::new(stream::iter(frames)).boxed_unsync()
    }

    async fn collect(b: ProxyBody) -> Bytes {
        match b.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => panic!("body failed: {e}"),
        }
    }

    #[test]
    fn query_finds_the_keys_only() {
        let q = query_params(
            "wstoken=0123abcd&wsfunction=core_webservice_get_site_info&moodlewsrestformat=json&x=1",
        );
        assert_eq!(q.wstoken.as_deref(), Some("0123abcd"));
        assert_eq!(
            q.wsfunction.as_deref(),
            Some("core_webservice_get_site_info")
        );
        assert_eq!(q.moodlewsrestformat.as_deref(), Some("json"));
        assert!(!q.ambiguous);
        let q = query_params("token=abc&file=1");
        assert_eq!(q.token.as_deref(), Some("abc"));
        assert_eq!(q.wstoken, None);
    }

    #[test]
    fn php_key_tricks() {
        let q = query_params("%77sfunction=a&+wstoken=b&token%00x=c&wsfunction%5B%5D=d");
        assert_eq!(q.wsfunction.as_deref(), Some("a"));
        assert_eq!(q.wstoken.as_deref(), Some("b"));
        assert_eq!(q.token.as_deref(), Some("c"));
        let q = query_params("wsfunction=a&wsfunction=b");
        assert_eq!(q.wsfunction.as_deref(), Some("b"));
        assert!(q.ambiguous);
        let q = query_params("wsfunction=a+b%21");
        assert_eq!(q.wsfunction.as_deref(), Some("a b!"));
    }

    #[test]
    fn post_wins_and_normal_forms() {
        let q = query_params("wstoken=AAAA&wsfunction=one&moodlewsrestformat=json");
        let b = BodyParams {
            params: query_params("wsfunction=%20Two%20"),
            complete: true,
        };
        let p = merge(EntryKind::Rest, &q, Some(&b));
        assert_eq!(p.function.as_deref(), Some("two"));
        assert_eq!(p.token.as_deref(), Some("aaaa"));
        assert_eq!(p.format, WsFormat::Json);
        assert!(p.complete);
        let p = merge(
            EntryKind::Pluginfile,
            &query_params("token=abc&wstoken=zzz"),
            None,
        );
        assert_eq!(p.token.as_deref(), Some("abc"));
        assert_eq!(p.format, WsFormat::Xml);
        let p = merge(EntryKind::Token, &query_params("wstoken=abc"), None);
        assert_eq!(p.token, None);
        assert_eq!(p.format, WsFormat::Json);
        let incomplete = BodyParams::default();
        assert!(!merge(EntryKind::Rest, &q, Some(&incomplete)).complete);
    }

    #[tokio::test]
    async fn urlencoded_body_with_bracket_arrays() {
        let raw: &'static [u8] = b"users%5B0%5D%5Busername%5D=a&users[0][email]=a%40b.c&wstoken=t1&wsfunction=core_user_create_users";
        let (found, body) = inspect_body(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            chunked(vec![&raw[..10], &raw[10..]]),
            1 << 20,
        )
        .await
        .unwrap();
        assert!(found.complete);
        assert_eq!(found.params.wstoken.as_deref(), Some("t1"));
        assert_eq!(
            found.params.wsfunction.as_deref(),
            Some("core_user_create_users")
        );
        assert_eq!(collect(body).await, Bytes::from_static(raw));
    }

    #[tokio::test]
    async fn bounded_read_passes_the_rest_byte_for_byte() {
        let mut raw = b"wsfunction=mod_x&pad=".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 100_000));
        raw.extend_from_slice(b"&wstoken=hidden");
        let raw: &'static [u8] = Box::leak(raw.into_boxed_slice());
        let parts: Vec<&'static [u8]> = raw.chunks(4096).collect();
        let (found, body) = inspect_body(
            Some("application/x-www-form-urlencoded"),
            chunked(parts),
            10_000,
        )
        .await
        .unwrap();
        assert!(!found.complete);
        assert_eq!(found.params.wsfunction.as_deref(), Some("mod_x"));
        assert_eq!(found.params.wstoken, None);
        assert_eq!(collect(body).await, Bytes::from_static(raw));
    }

    #[tokio::test]
    async fn truncated_pair_is_not_trusted() {
        let raw: &'static [u8] = b"a=1&wsfunction=core_user_delete_users_and_more";
        let (found, body) = inspect_body(
            Some("application/x-www-form-urlencoded"),
            chunked(vec![&raw[..20], &raw[20..]]),
            20,
        )
        .await
        .unwrap();
        assert!(!found.complete);
        assert_eq!(found.params.wsfunction, None);
        assert_eq!(collect(body).await, Bytes::from_static(raw));
    }

    fn multipart_body(file_len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"wstoken\"\r\n\r\ntok123\r\n",
        );
        b.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"users[0][username]\"\r\n\r\nbob\r\n",
        );
        b.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        b.extend(std::iter::repeat_n(b'z', file_len));
        b.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"wsfunction\"\r\n\r\ncore_files_upload\r\n--XyZ--\r\n");
        b
    }

    #[tokio::test]
    async fn multipart_small_and_large() {
        let ct = Some("multipart/form-data; boundary=XyZ");
        let raw: &'static [u8] = Box::leak(multipart_body(100).into_boxed_slice());
        let (found, body) = inspect_body(ct, chunked(raw.chunks(7).collect()), 1 << 20)
            .await
            .unwrap();
        assert!(found.complete);
        assert_eq!(found.params.wstoken.as_deref(), Some("tok123"));
        assert_eq!(
            found.params.wsfunction.as_deref(),
            Some("core_files_upload")
        );
        assert_eq!(collect(body).await, Bytes::from_static(raw));

        // A file part larger than the buffer: the field after it stays unknown, bytes intact.
        let raw: &'static [u8] = Box::leak(multipart_body(300_000).into_boxed_slice());
        let (found, body) = inspect_body(ct, chunked(raw.chunks(8192).collect()), 64 * 1024)
            .await
            .unwrap();
        assert!(!found.complete);
        assert_eq!(found.params.wstoken.as_deref(), Some("tok123"));
        assert_eq!(found.params.wsfunction, None);
        assert_eq!(collect(body).await, Bytes::from_static(raw));
    }

    #[tokio::test]
    async fn other_types_untouched() {
        let (found, body) = inspect_body(Some("application/json"), body::full("{}"), 10)
            .await
            .unwrap();
        assert!(found.complete);
        assert_eq!(collect(body).await, Bytes::from_static(b"{}"));
        let (found, _) = inspect_body(Some("multipart/form-data"), body::full("x"), 10)
            .await
            .unwrap();
        assert!(!found.complete);
    }

    #[tokio::test]
    async fn size_hint_and_trailers_survive() {
        let (_, body) = inspect_body(
            Some("application/x-www-form-urlencoded"),
            body::full("wstoken=a"),
            4,
        )
        .await
        .unwrap();
        assert_eq!(body.size_hint().exact(), Some(9));
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"a=1"))),
            Ok(Frame::trailers(trailers)),
        ];
        let src = StreamBody::new(stream::iter(frames)).boxed_unsync();
        let (_, body) = inspect_body(Some("application/x-www-form-urlencoded"), src, 100)
            .await
            .unwrap();
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"a=1"));
    }
}

#[cfg(test)]
mod xml_call_tests {
    use super::*;

    #[test]
    fn xmlrpc_method_name() {
        let body = br#"<?xml version="1.0"?><methodCall><methodName> core_course_get_courses </methodName><params/></methodCall>"#;
        assert_eq!(
            xml_call_function(body).as_deref(),
            Some("core_course_get_courses")
        );
    }

    #[test]
    fn soap_first_body_element() {
        let soap11 = br#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="urn:x">
 <SOAP-ENV:Header/>
 <SOAP-ENV:Body>
  <!-- a comment -->
  <ns1:tool_dataprivacy_get_data_request><requestid>3</requestid></ns1:tool_dataprivacy_get_data_request>
 </SOAP-ENV:Body></SOAP-ENV:Envelope>"#;
        assert_eq!(
            xml_call_function(soap11).as_deref(),
            Some("tool_dataprivacy_get_data_request")
        );
        let unprefixed = br#"<Envelope><Body><core_user_get_users/></Body></Envelope>"#;
        assert_eq!(
            xml_call_function(unprefixed).as_deref(),
            Some("core_user_get_users")
        );
    }

    #[test]
    fn odd_input_leaves_the_name_unknown() {
        assert_eq!(xml_call_function(b""), None);
        assert_eq!(xml_call_function(b"<methodName>"), None);
        assert_eq!(xml_call_function(b"<methodName>a b</methodName>"), None);
        assert_eq!(xml_call_function(b"<Envelope><Body>"), None);
        assert_eq!(xml_call_function(&[0xff, 0xfe, b'<']), None);
    }

    #[tokio::test]
    async fn an_xmlrpc_call_names_its_function_and_passes_through_unchanged() {
        use http_body_util::BodyExt;
        let raw = br#"<?xml version="1.0"?><methodCall><methodName>core_user_get_users</methodName></methodCall>"#;
        let (found, body) = inspect_call_body(
            EntryKind::XmlRpc,
            Some("text/xml"),
            crate::body::full(&raw[..]),
            1 << 20,
        )
        .await
        .unwrap();
        assert_eq!(
            found.params.wsfunction.as_deref(),
            Some("core_user_get_users")
        );
        assert!(found.complete);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], &raw[..]);
    }
}
