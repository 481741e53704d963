//! The log stage: one access-log line per request, written when the response body has been
//! sent (or the client went away), with the byte count and every secret redacted.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Serialize;

use crate::body::{BoxError, ProxyBody};
use crate::observe::config::AccessFormat;
use crate::observe::metrics::CoreMetrics;
use crate::observe::redact;
use crate::observe::sink::LineSink;
use crate::route::Route;
use crate::timer::head_clock::InFlight;

/// What the access log says about one request; filled in by the stages as they run.
#[derive(Serialize)]
pub struct AccessRecord {
    /// When the request finished (set when the line is written, as nginx's `$time_local`).
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    pub request_id: String,
    pub client_ip: IpAddr,
    pub method: String,
    pub host: String,
    /// Path and query, with secrets redacted.
    pub target: String,
    pub protocol: &'static str,
    pub tls: bool,
    pub route: &'static str,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offload: Option<String>,
    /// Why the edge answered itself (rate_limited, body_too_large, ...) when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// The response body ended early: client gone, upstream cut, file changed.
    pub complete: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub referer: String,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

impl AccessRecord {
    fn line(&self, format: AccessFormat) -> String {
        match format {
            AccessFormat::Json => serde_json::to_string(self).unwrap_or_default(),
            AccessFormat::Combined => format!(
                "{ip} - - [{time}] \"{method} {target} {proto}\" {status} {bytes} \"{referer}\" \"{ua}\" rt={rt:.3} urt={urt} rid={rid} route={route}{offload}{note}",
                ip = self.client_ip,
                time = humantime::format_rfc3339_millis(self.time),
                method = self.method,
                target = self.target,
                proto = self.protocol,
                status = self.status,
                bytes = self.bytes_sent,
                referer = if self.referer.is_empty() { "-" } else { &self.referer },
                ua = if self.user_agent.is_empty() { "-" } else { &self.user_agent },
                rt = self.duration_ms / 1000.0,
                urt = self
                    .upstream_ms
                    .map(|m| format!("{:.3}", m / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                rid = self.request_id,
                route = self.route,
                offload = self
                    .offload
                    .as_deref()
                    .map(|f| format!(" offload={f}"))
                    .unwrap_or_default(),
                note = self.note.map(|n| format!(" note={n}")).unwrap_or_default(),
            ),
        }
    }
}

/// Finishes a request exactly once: when its body ends, fails or is dropped.
pub struct Finish {
    /// The route and status to count; None once counted.
    outcome: Option<(Route, u16)>,
    /// The access-log line's fields; None when the access log is off (only the metrics
    /// remain, and nothing of the line is built).
    record: Option<Box<AccessRecord>>,
    /// Body bytes handed to the connection so far.
    bytes: u64,
    started: Instant,
    sink: LineSink,
    format: AccessFormat,
    metrics: Arc<CoreMetrics>,
    /// Keeps the connection's header-read clock stopped until the answer is done.
    in_flight: Option<InFlight>,
}

impl Finish {
    pub fn new(
        route: Route,
        status: u16,
        record: Option<Box<AccessRecord>>,
        started: Instant,
        sink: LineSink,
        format: AccessFormat,
        metrics: Arc<CoreMetrics>,
    ) -> Self {
        metrics.in_flight.inc();
        Finish {
            outcome: Some((route, status)),
            record,
            bytes: 0,
            started,
            sink,
            format,
            metrics,
            in_flight: None,
        }
    }

    /// Holds the connection's in-flight guard until the body is done.
    pub fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    fn done(&mut self, complete: bool) {
        self.in_flight = None;
        let Some((route, status)) = self.outcome.take() else {
            return;
        };
        self.metrics.in_flight.dec();
        self.metrics.count_request(route, status);
        if let Some(mut record) = self.record.take() {
            if self.sink.enabled() {
                // Moodle puts sesskey (and tokens) in page URLs, so the Referer carries them.
                if let Some(redacted) = redact_referer(&record.referer) {
                    record.referer = redacted;
                }
                record.bytes_sent = self.bytes;
                record.complete = complete;
                record.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
                self.sink.write(record.line(self.format));
            }
        }
    }
}

/// The Referer with its query secrets and a tokenpluginfile token redacted; None when it holds
/// none.
fn redact_referer(referer: &str) -> Option<String> {
    let (url, query) = match referer.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (referer, None),
    };
    let path_start = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[path_start..]
        .find('/')
        .map_or(url.len(), |i| path_start + i);
    let redacted = format!(
        "{}{}",
        &url[..path_start],
        redact::redact_target(&url[path_start..], query)
    );
    (redacted != referer).then_some(redacted)
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped before the end of the body: the client went away or the body failed.
        self.done(false);
    }
}

pin_project! {
    /// The response body, counted as it goes out; logs when done.
    pub struct LoggedBody {
        #[pin]
        inner: ProxyBody,
        finish: Finish,
    }
}

impl LoggedBody {
    pub fn new(inner: ProxyBody, finish: Finish) -> Self {
        let mut body = LoggedBody { inner, finish };
        // A body with nothing to send (HEAD, 304, redirects) is done now: hyper may never poll it.
        if body.inner.is_end_stream() {
            body.finish.done(true);
        }
        body
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.finish.bytes += data.len() as u64;
                }
                // hyper stops polling once a sized body is complete: finish on the last frame.
                if this.inner.is_end_stream() {
                    this.finish.done(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish.done(false),
            Poll::Ready(None) => this.finish.done(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record() -> AccessRecord {
        AccessRecord {
            time: SystemTime::UNIX_EPOCH,
            request_id: "r1".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET".into(),
            host: "lms".into(),
            target: "/x?wstoken=[redacted]".into(),
            protocol: "HTTP/1.1",
            tls: false,
            route: "page",
            status: 200,
            bytes_sent: 0,
            duration_ms: 0.0,
            upstream_ms: None,
            offload: None,
            note: None,
            complete: false,
            user_agent: String::new(),
            referer: String::new(),
        }
    }

    #[tokio::test]
    async fn logs_once_with_byte_count() {
        use http_body_util::BodyExt;
        let buf = Buf::default();
        let sink = LineSink::from_writer(Box::new(buf.clone()));
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(CoreMetrics::register(&registry).unwrap());
        let finish = Finish::new(
            Route::Page,
            200,
            Some(Box::new(record())),
            Instant::now(),
            sink,
            AccessFormat::Json,
            metrics.clone(),
        );
        let body = LoggedBody::new(crate::body::full("hello"), finish);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        // The line is written by the sink's writer: polled for, not slept on.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !buf.0.lock().unwrap().ends_with(b"\n") {
            assert!(std::time::Instant::now() < deadline, "no access-log line");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["bytes_sent"], 5);
        assert_eq!(v["complete"], true);
        assert_eq!(metrics.in_flight.get(), 0);
    }

    #[test]
    fn referer_secrets_are_redacted() {
        assert_eq!(
            redact_referer("https://lms/course/view.php?id=2&sesskey=abc").as_deref(),
            Some("https://lms/course/view.php?id=2&sesskey=[redacted]")
        );
        assert_eq!(
            redact_referer("https://lms/tokenpluginfile.php/abc/1/a.pdf").as_deref(),
            Some("https://lms/tokenpluginfile.php/[redacted]/1/a.pdf")
        );
        assert_eq!(redact_referer("https://lms/course/view.php?id=2"), None);
        assert_eq!(redact_referer(""), None);
    }

    #[test]
    fn combined_format_has_the_usual_fields() {
        let line = record().line(AccessFormat::Combined);
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.contains("\"GET /x?wstoken=[redacted] HTTP/1.1\" 200 0 \"-\" \"-\""),
            "{line}"
        );
    }
}
