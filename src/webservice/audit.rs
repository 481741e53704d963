//! The web-service audit log: one JSON line per call, formatted straight into a `LineSink`'s
//! batch (no copy per line; its own thread writes, never blocking a request). The token appears
//! only as its fingerprint.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::observe::sink::LineSink;
use crate::webservice::guard::{Rejection, WsCall};
use crate::webservice::outcome::CallReport;
use crate::webservice::token::fingerprint;

#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "ser_time")]
    time: SystemTime,
    entry: &'static str,
    function: Option<&'a str>,
    token_fp: Option<String>,
    client_ip: IpAddr,
    duration_ms: u64,
    status: Option<u16>,
    outcome: &'a str,
    exception: Option<&'a str>,
    errorcode: Option<&'a str>,
    bytes: u64,
    request_id: Option<&'a str>,
}

#[derive(Clone)]
pub(crate) struct AuditLog {
    sink: LineSink,
}

impl AuditLog {
    pub(crate) fn new(sink: LineSink) -> Self {
        AuditLog { sink }
    }

    /// A call that went to Moodle.
    pub(crate) fn record(
        &self,
        call: &WsCall,
        report: &CallReport,
        duration: Duration,
        request_id: Option<&str>,
    ) {
        if !self.sink.enabled() {
            return;
        }
        self.write(Line {
            time: SystemTime::now(),
            entry: call.entry.as_str(),
            function: call.function.as_deref(),
            token_fp: call.token.as_deref().map(fingerprint),
            client_ip: call.client_ip,
            duration_ms: duration.as_millis() as u64,
            status: report.status,
            outcome: report.class.as_str(),
            exception: report.exception.as_deref(),
            errorcode: report.errorcode.as_deref(),
            bytes: report.bytes,
            request_id,
        });
    }

    /// A call the edge refused; outcome is `rejected:<reason>`.
    pub(crate) fn record_rejection(
        &self,
        call: &WsCall,
        rejection: &Rejection,
        duration: Duration,
        request_id: Option<&str>,
    ) {
        if !self.sink.enabled() {
            return;
        }
        let outcome = format!("rejected:{}", rejection.reason());
        self.write(Line {
            time: SystemTime::now(),
            entry: call.entry.as_str(),
            function: call.function.as_deref(),
            token_fp: call.token.as_deref().map(fingerprint),
            client_ip: call.client_ip,
            duration_ms: duration.as_millis() as u64,
            status: Some(rejection.status().as_u16()),
            outcome: &outcome,
            exception: None,
            errorcode: None,
            bytes: 0,
            request_id,
        });
    }

    fn write(&self, line: Line<'_>) {
        self.sink.write_with(|out| {
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)
        });
    }
}

/// The time as the access log writes it, straight into the line.
fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

#[cfg(test)]
/// `2026-11-03T12:34:56.789Z`, the same form as the access log's `time`.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webservice::entry::EntryKind;
    use crate::webservice::entry::WsFormat;
    use crate::webservice::outcome::OutcomeClass;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
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

    #[test]
    fn time_format() {
        use std::time::UNIX_EPOCH;
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_123); // 2024-02-29
        assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56.123Z");
    }

    #[test]
    fn one_line_without_the_token() {
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let log = AuditLog::new(LineSink::from_writer(Box::new(buf.clone())).unwrap());
        let token = "0123456789abcdef0123456789abcdef";
        let call = WsCall {
            entry: EntryKind::Rest,
            path: "/webservice/rest/server.php".into(),
            token: Some(token.into()),
            function: Some("core_webservice_get_site_info".into()),
            format: WsFormat::Json,
            client_ip: "192.0.2.7".parse().unwrap(),
            complete: true,
        };
        let report = CallReport {
            class: OutcomeClass::AuthFailure,
            exception: Some("moodle_exception".into()),
            errorcode: Some("invalidtoken".into()),
            status: Some(200),
            bytes: 99,
            ended_cleanly: true,
        };
        log.record(&call, &report, Duration::from_millis(12), Some("req-1"));
        let mut text = String::new();
        for _ in 0..2000 {
            text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            if text.ends_with('\n') {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(text.lines().count(), 1);
        assert!(!text.contains(token));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["token_fp"], fingerprint(token));
        assert_eq!(v["outcome"], "auth_failure");
        assert_eq!(v["errorcode"], "invalidtoken");
        assert_eq!(v["duration_ms"], 12);
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["entry"], "rest");
    }
}
