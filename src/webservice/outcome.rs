//! What became of a call, read from the status and the first bytes of the answer.
//!
//! Moodle reports most errors as HTTP 200 with an exception body, so the status alone says
//! little. Only failures that say the *upstream* is unwell count for the breaker: gateway
//! errors, timeouts, refused connections and the database exceptions that come and go under
//! load (deadlocks, lock timeouts, lost connections). Client faults, auth failures and business
//! errors are answers from a healthy Moodle and do not count.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, ProxyBody};

/// How much of an answer is kept aside to find an exception in it.
pub(crate) const SNIFF_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    Ok,
    ClientFault,
    AuthFailure,
    BusinessError,
    Transient,
    UpstreamError,
    Timeout,
}

impl OutcomeClass {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::ClientFault => "client_fault",
            OutcomeClass::AuthFailure => "auth_failure",
            OutcomeClass::BusinessError => "business_error",
            OutcomeClass::Transient => "transient",
            OutcomeClass::UpstreamError => "upstream_error",
            OutcomeClass::Timeout => "timeout",
        }
    }

    /// Whether the breaker counts this call as a failure.
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            OutcomeClass::Transient | OutcomeClass::UpstreamError | OutcomeClass::Timeout
        )
    }
}

/// Failures below HTTP: the proxy never got a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connection refused or reset before an answer.
    Refused,
    /// No answer (or no complete headers) in time.
    Timeout,
    /// Any other transport or protocol failure (the proxy answers 502).
    BadGateway,
}

/// The result of one call, handed to the completion callback and to `Admission::finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    pub class: OutcomeClass,
    pub exception: Option<String>,
    pub errorcode: Option<String>,
    /// The status sent to the client, if an answer was produced.
    pub status: Option<u16>,
    /// Body bytes that passed to the client.
    pub bytes: u64,
    /// The body reached its end (false: dropped early or failed).
    pub ended_cleanly: bool,
}

impl CallReport {
    /// For a call that got no answer from Moodle (connect refused, timeout, broken connection).
    pub fn upstream_failure(kind: UpstreamFailure) -> Self {
        let (class, status) = match kind {
            UpstreamFailure::Timeout => (OutcomeClass::Timeout, 504),
            UpstreamFailure::Refused | UpstreamFailure::BadGateway => {
                (OutcomeClass::UpstreamError, 502)
            }
        };
        CallReport {
            class,
            exception: None,
            errorcode: None,
            status: Some(status),
            bytes: 0,
            ended_cleanly: false,
        }
    }
}

/// Classifies a Moodle exception by class and error code.
pub(crate) fn classify_exception(exception: Option<&str>, errorcode: Option<&str>) -> OutcomeClass {
    let ex = exception.unwrap_or("");
    let code = errorcode.unwrap_or("");
    // Transient: the database or session layer under load. `dml_read_exception` is left out on
    // purpose: it is as often bad SQL (a bug) as an overloaded server.
    const TRANSIENT_EX: [&str; 4] = [
        "dml_write_exception",
        "dml_transaction_exception",
        "dml_connection_exception",
        "dml_sessionwait_exception",
    ];
    const TRANSIENT_CODE: [&str; 5] = [
        "deadlock",
        "locktimeout",
        "cannotgetlock",
        "sessionwaiterr",
        "dbconnectionfailed",
    ];
    if TRANSIENT_EX.contains(&ex) || TRANSIENT_CODE.iter().any(|c| code.contains(c)) {
        return OutcomeClass::Transient;
    }
    const AUTH_EX: [&str; 4] = [
        "webservice_access_exception",
        "required_capability_exception",
        "require_login_exception",
        "require_login_session_timeout_exception",
    ];
    const AUTH_CODE: [&str; 9] = [
        "invalidtoken",
        "accessexception",
        "nopermissions",
        "requireloginerror",
        "invalidlogin",
        "usernotfullysetup",
        "forcepasswordchangenotice",
        "servicerequireslogin",
        "sitemaintenance",
    ];
    if AUTH_EX.contains(&ex) || AUTH_CODE.contains(&code) {
        return OutcomeClass::AuthFailure;
    }
    if ex == "invalid_parameter_exception" || code == "invalidparameter" {
        return OutcomeClass::ClientFault;
    }
    OutcomeClass::BusinessError
}

/// Reads the exception class and error code from the start of a Moodle error body:
/// JSON `{"exception":..,"errorcode":..}`, token.php's `{"error":..,"errorcode":..}`,
/// XML `<EXCEPTION class=".."><ERRORCODE>..</ERRORCODE>` or a SOAP fault's `<faultcode>`.
/// Works on a truncated prefix (debug info can make error bodies long).
pub(crate) fn sniff_exception(prefix: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let start = prefix.iter().position(|b| !b.is_ascii_whitespace())?;
    let body = &prefix[start..];
    if body.starts_with(b"{") {
        let head = skip_ws(&body[1..]);
        if head.starts_with(b"\"exception\"") || head.starts_with(b"\"error\"") {
            let exception = json_string_field(body, b"\"exception\"");
            let errorcode = json_string_field(body, b"\"errorcode\"");
            // `{"error": ...}` is token.php's shape only when an errorcode comes with it.
            if exception.is_none() && errorcode.is_none() {
                return None;
            }
            return Some((exception, errorcode));
        }
        return None;
    }
    if body.starts_with(b"<") {
        let text = std::str::from_utf8(body).ok().or_else(|| {
            // A cut in the middle of a UTF-8 sequence: use what is valid.
            let valid = std::str::from_utf8(body).err()?.valid_up_to();
            std::str::from_utf8(&body[..valid]).ok()
        })?;
        let root = skip_xml_prolog(text);
        if let Some(rest) = root.strip_prefix("<EXCEPTION class=\"") {
            let exception = rest.split_once('"').map(|(c, _)| xml_unescape(c));
            let errorcode = between(rest, "<ERRORCODE>", "</ERRORCODE>").map(xml_unescape);
            return Some((exception, errorcode));
        }
        if root.contains(":Fault>") || root.contains("<Fault>") {
            let code = between(root, "<faultcode>", "</faultcode>")
                .map(|c| c.rsplit(':').next().unwrap_or(c))
                .map(xml_unescape);
            return Some((code, None));
        }
    }
    None
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[i..]
}

fn skip_xml_prolog(text: &str) -> &str {
    let mut t = text.trim_start();
    if t.starts_with("<?xml") {
        if let Some((_, rest)) = t.split_once("?>") {
            t = rest.trim_start();
        }
    }
    t
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(open)?;
    let (inner, _) = rest.split_once(close)?;
    Some(inner)
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#039;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Finds `"key": "value"` and decodes the JSON string; fine on a truncated body as long as the
/// value itself is complete.
fn json_string_field(body: &[u8], key: &[u8]) -> Option<String> {
    let at = body.windows(key.len()).position(|w| w == key)?;
    let rest = skip_ws(&body[at + key.len()..]);
    let rest = skip_ws(rest.strip_prefix(b":")?);
    if !rest.starts_with(b"\"") {
        return None;
    }
    let mut i = 1;
    while i < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'"' => return serde_json::from_slice::<String>(&rest[..=i]).ok(),
            _ => i += 1,
        }
    }
    None
}

/// Classifies a finished answer from its status and the first bytes of its body.
pub(crate) fn classify_response(
    status: u16,
    prefix: &[u8],
) -> (OutcomeClass, Option<String>, Option<String>) {
    if let Some((exception, errorcode)) = sniff_exception(prefix) {
        let mut class = classify_exception(exception.as_deref(), errorcode.as_deref());
        if class == OutcomeClass::Transient
            && exception.as_deref() == Some("dml_write_exception")
            && mentions_unique_violation(prefix)
        {
            // The same exception is a deadlock or a duplicate-key insert; when the site shows
            // debuginfo, the database's own words tell them apart. A duplicate is the
            // caller's conflict, not an unwell upstream.
            class = OutcomeClass::BusinessError;
        }
        return (class, exception, errorcode);
    }
    let class = match status {
        // Gateway errors, and a PHP fatal error (memory, time limit) with no Moodle exception
        // in it: both say the upstream is unwell.
        500 | 502..=504 => OutcomeClass::UpstreamError,
        401 | 403 => OutcomeClass::AuthFailure,
        400..=499 => OutcomeClass::ClientFault,
        501..=599 => OutcomeClass::BusinessError,
        _ => OutcomeClass::Ok,
    };
    (class, None, None)
}

/// MySQL/MariaDB, PostgreSQL, SQL Server and Oracle wording of a unique-key violation.
fn mentions_unique_violation(body: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 5] = [
        b"Duplicate entry",
        b"duplicate key",
        b"unique constraint",
        b"UNIQUE KEY constraint",
        b"ORA-00001",
    ];
    NEEDLES
        .iter()
        .any(|n| memchr::memmem::find(body, n).is_some())
}

type Callback = Box<dyn FnOnce(CallReport) + Send>;

/// Passes a response body through unchanged while keeping its first 8 KiB aside; when the body
/// ends, fails or is dropped, calls the completion callback exactly once with the [`CallReport`].
pub(crate) struct OutcomeBody {
    inner: ProxyBody,
    status: u16,
    sniff: Vec<u8>,
    bytes: u64,
    failed: bool,
    done: Option<Callback>,
}

impl OutcomeBody {
    pub(crate) fn new(
        inner: ProxyBody,
        status: u16,
        on_done: impl FnOnce(CallReport) + Send + 'static,
    ) -> Self {
        OutcomeBody {
            inner,
            status,
            sniff: Vec::new(),
            bytes: 0,
            failed: false,
            done: Some(Box::new(on_done)),
        }
    }

    fn complete(&mut self, ended_cleanly: bool) {
        if let Some(cb) = self.done.take() {
            let (mut class, exception, errorcode) = classify_response(self.status, &self.sniff);
            if self.failed && !class.counts_as_failure() {
                // The upstream broke mid-answer.
                class = OutcomeClass::UpstreamError;
            }
            cb(CallReport {
                class,
                exception,
                errorcode,
                status: Some(self.status),
                bytes: self.bytes,
                ended_cleanly,
            });
        }
    }
}

impl Body for OutcomeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.complete(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                this.complete(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    let room = SNIFF_BYTES.saturating_sub(this.sniff.len());
                    if room > 0 {
                        this.sniff.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // hyper stops polling once a body says it has ended: finish now, not on drop.
                if this.inner.is_end_stream() {
                    this.complete(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for OutcomeBody {
    fn drop(&mut self) {
        let clean = self.inner.is_end_stream() && !self.failed;
        self.complete(clean);
    }
}

/// Wraps an upstream answer so its outcome is reported once it has been sent (or abandoned).
/// Headers and body pass through untouched.
pub(crate) fn wrap_response(
    response: http::Response<ProxyBody>,
    on_done: impl FnOnce(CallReport) + Send + 'static,
) -> http::Response<ProxyBody> {
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    http::Response::from_parts(
        parts,
        OutcomeBody::new(body, status, on_done).boxed_unsync(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use futures_util::stream;
    use http_body_util::StreamBody;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (
        Arc<Mutex<Vec<CallReport>>>,
        impl FnOnce(CallReport) + Send + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        (seen, move |r| s2.lock().unwrap().push(r))
    }

    #[test]
    fn a_duplicate_key_write_is_the_callers_conflict_when_debuginfo_says_so() {
        let deadlock = br#"{"exception":"dml_write_exception","errorcode":"dmlwriteexception","message":"Error writing to database","debuginfo":"Deadlock found when trying to get lock"}"#;
        assert_eq!(classify_response(200, deadlock).0, OutcomeClass::Transient);
        let duplicate = br#"{"exception":"dml_write_exception","errorcode":"dmlwriteexception","message":"Error writing to database","debuginfo":"Duplicate entry 'abc' for key 'mdl_user_mneuse_uix'"}"#;
        assert_eq!(
            classify_response(200, duplicate).0,
            OutcomeClass::BusinessError
        );
        let pg = br#"{"exception":"dml_write_exception","errorcode":"dmlwriteexception","message":"x","debuginfo":"ERROR:  duplicate key value violates unique constraint"}"#;
        assert_eq!(classify_response(200, pg).0, OutcomeClass::BusinessError);
        // Without debuginfo nothing tells them apart: counted as transient.
        let bare = br#"{"exception":"dml_write_exception","errorcode":"dmlwriteexception","message":"Error writing to database"}"#;
        assert_eq!(classify_response(200, bare).0, OutcomeClass::Transient);
    }

    #[test]
    fn classes() {
        let c = |e: &str, code: &str| classify_exception(Some(e), Some(code));
        assert_eq!(
            c("dml_write_exception", "dmlwriteexception"),
            OutcomeClass::Transient
        );
        assert_eq!(
            c("moodle_exception", "lockdeadlock"),
            OutcomeClass::Transient
        );
        assert_eq!(
            c("dml_read_exception", "dmlreadexception"),
            OutcomeClass::BusinessError
        );
        assert_eq!(
            c("invalid_parameter_exception", "invalidparameter"),
            OutcomeClass::ClientFault
        );
        assert_eq!(
            c("moodle_exception", "invalidtoken"),
            OutcomeClass::AuthFailure
        );
        assert_eq!(
            c("required_capability_exception", "nopermissions"),
            OutcomeClass::AuthFailure
        );
        assert_eq!(
            c("moodle_exception", "alreadyexists"),
            OutcomeClass::BusinessError
        );
        assert!(OutcomeClass::Timeout.counts_as_failure());
        assert!(!OutcomeClass::ClientFault.counts_as_failure());
    }

    #[test]
    fn sniffing() {
        let json = br#"{"exception":"dml_write_exception","errorcode":"dmlwriteexception","message":"x \"q\""}"#;
        assert_eq!(
            classify_response(200, json),
            (
                OutcomeClass::Transient,
                Some("dml_write_exception".into()),
                Some("dmlwriteexception".into())
            )
        );
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<EXCEPTION class=\"invalid_parameter_exception\">\n<ERRORCODE>invalidparameter</ERRORCODE>\n<MESSAGE>m</MESSAGE>\n</EXCEPTION>\n";
        assert_eq!(classify_response(200, xml).0, OutcomeClass::ClientFault);
        let token = br#"{"error":"Invalid login","errorcode":"invalidlogin"}"#;
        assert_eq!(classify_response(200, token).0, OutcomeClass::AuthFailure);
        // Truncated long debuginfo still classifies.
        let cut =
            br#"{"exception":"moodle_exception","errorcode":"invalidtoken","message":"Invalid tok"#;
        assert_eq!(classify_response(200, cut).0, OutcomeClass::AuthFailure);
        assert_eq!(
            classify_response(200, br#"{"sitename":"x"}"#).0,
            OutcomeClass::Ok
        );
        assert_eq!(classify_response(200, b"[]").0, OutcomeClass::Ok);
        assert_eq!(
            classify_response(503, b"<html>").0,
            OutcomeClass::UpstreamError
        );
        assert_eq!(classify_response(404, b"").0, OutcomeClass::ClientFault);
        let soap = b"<?xml version=\"1.0\"?><SOAP-ENV:Envelope><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>SOAP-ENV:invalid_parameter_exception</faultcode>";
        assert_eq!(classify_response(500, soap).0, OutcomeClass::ClientFault);
    }

    #[tokio::test]
    async fn callback_once_on_end_with_bytes_unchanged() {
        let (seen, cb) = recorder();
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(
                br#"{"exception":"moodle_exception","#,
            ))),
            Ok(Frame::data(Bytes::from_static(
                br#""errorcode":"invalidtoken","message":"m"}"#,
            ))),
        ];
        let resp = http::Response::new(StreamBody::new(stream::iter(frames)).boxed_unsync());
        let wrapped = wrap_response(resp, cb);
        let out = wrapped.into_body().collect().await.unwrap().to_bytes();
        assert!(out.starts_with(b"{\"exception\""));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].class, OutcomeClass::AuthFailure);
        assert_eq!(seen[0].bytes, out.len() as u64);
        assert!(seen[0].ended_cleanly);
    }

    #[tokio::test]
    async fn callback_once_with_known_length_body() {
        let (seen, cb) = recorder();
        let mut b = OutcomeBody::new(body::full("hello"), 200, cb);
        let f = b.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(seen.lock().unwrap().len(), 1, "reported at the last frame");
        drop(b);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].ended_cleanly);
        assert_eq!(seen[0].class, OutcomeClass::Ok);
    }

    #[tokio::test]
    async fn callback_once_on_drop_and_on_error() {
        let (seen, cb) = recorder();
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"part"))),
            Ok(Frame::data(Bytes::from_static(b"more"))),
        ];
        let mut b = OutcomeBody::new(
            StreamBody::new(stream::iter(frames)).boxed_unsync(),
            200,
            cb,
        );
        let _ = b.frame().await;
        drop(b);
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1);
            assert!(!seen[0].ended_cleanly);
            assert_eq!(seen[0].bytes, 4);
        }

        let (seen, cb) = recorder();
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"{\"a\":"))),
            Err::<Frame<Bytes>, BoxError>("reset".into()),
        ];
        let mut b = OutcomeBody::new(
            StreamBody::new(stream::iter(frames)).boxed_unsync(),
            200,
            cb,
        );
        while let Some(r) = b.frame().await {
            if r.is_err() {
                break;
            }
        }
        drop(b);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].class, OutcomeClass::UpstreamError);
        assert!(!seen[0].ended_cleanly);
    }

    #[test]
    fn upstream_failure_reports() {
        let r = CallReport::upstream_failure(UpstreamFailure::Timeout);
        assert_eq!(r.class, OutcomeClass::Timeout);
        assert_eq!(r.status, Some(504));
        assert_eq!(
            CallReport::upstream_failure(UpstreamFailure::Refused).class,
            OutcomeClass::UpstreamError
        );
    }
}
