//! The log stage: one access-log line per request, written when the response body has been
//! sent (or the client went away), with the byte count and every secret redacted.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{BoxError, ProxyBody};
pub(crate) use crate::observe::access_line::AccessRecord;
use crate::observe::config::AccessFormat;
use crate::observe::json_line;
use crate::observe::metrics::CoreMetrics;
use crate::observe::sink::LineSink;
use crate::route::Route;
use crate::timer::head_clock::InFlight;

/// Finishes a request exactly once: when its body ends, fails or is dropped.
pub(crate) struct Finish {
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
    pub(crate) fn new(
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
    pub(crate) fn hold(&mut self, in_flight: InFlight) {
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
            record.bytes_sent = self.bytes;
            record.complete = complete;
            record.duration_us = micros(self.started.elapsed());
            let time = SystemTime::now();
            let format = self.format;
            self.sink
                .write_with(|out| write_line(&record, format, time, out));
        }
    }
}

/// A duration in whole microseconds (saturating: no request lasts 584,000 years).
pub(crate) fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Appends `record`'s line (without its newline) in the configured format.
fn write_line(
    record: &AccessRecord,
    format: AccessFormat,
    time: SystemTime,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    match format {
        AccessFormat::Json => {
            json_line::write(record, time, out);
            Ok(())
        }
        AccessFormat::Combined => record.write_combined(time, out),
    }
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
    pub(crate) fn new(inner: ProxyBody, finish: Finish) -> Self {
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
    use crate::observe::access_line::tests::record;
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Duration;

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

    #[tokio::test]
    async fn logs_once_with_byte_count_and_the_time_of_writing() {
        use http_body_util::BodyExt;
        let buf = Buf::default();
        let sink = LineSink::from_writer(Box::new(buf.clone())).unwrap();
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
        let before = SystemTime::now() - Duration::from_secs(1);
        let body = LoggedBody::new(crate::body::full("hello"), finish);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        // The body (and so the last handle to the sink) is gone: the sink closes and writes.
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            if text.ends_with('\n') || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["bytes_sent"], 5);
        assert_eq!(v["complete"], true);
        let time = humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap();
        assert!(time >= before, "{v}");
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
