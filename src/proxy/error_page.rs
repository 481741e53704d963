//! The short answers the edge gives itself: a small HTML page for browsers, or Moodle-shaped
//! JSON on web-service routes, so a mobile app or integration reads an error it understands.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// How the client expects errors to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorStyle {
    Html,
    /// Moodle web-service JSON: {"exception","errorcode","message"}.
    MoodleJson,
}

/// The Moodle errorcode for an edge-generated status.
fn errorcode(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalidrequest",
        403 => "accessdenied",
        404 => "notfound",
        405 => "methodnotallowed",
        408 => "requesttimeout",
        413 => "requesttoolarge",
        429 => "toomanyrequests",
        502 => "upstreamunavailable",
        503 => "serviceunavailable",
        504 => "upstreamtimeout",
        _ => "edgeerror",
    }
}

pub(crate) fn error_response(
    status: StatusCode,
    style: ErrorStyle,
    message: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let (content_type, text) = match style {
        ErrorStyle::MoodleJson => (
            "application/json; charset=utf-8",
            serde_json::json!({
                "exception": "moodle_exception",
                "errorcode": errorcode(status),
                "message": message,
                "debuginfo": format!("moodle-edge request id {request_id}"),
            })
            .to_string(),
        ),
        ErrorStyle::Html => (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1>\n<p>{message}</p>\n<p><small>Request id: {rid}</small></p></body></html>\n",
                code = status.as_u16(),
                reason = status.canonical_reason().unwrap_or(""),
                message = html_escape(message),
                rid = html_escape(request_id),
            ),
        ),
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_errors_are_moodle_shaped() {
        let r = error_response(
            StatusCode::BAD_GATEWAY,
            ErrorStyle::MoodleJson,
            "The site is not answering.",
            "rid1",
        );
        assert_eq!(r.status(), 502);
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["exception"], "moodle_exception");
        assert_eq!(v["errorcode"], "upstreamunavailable");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(html_escape("<a href='x'>"), "&lt;a href=&#39;x&#39;&gt;");
    }
}
