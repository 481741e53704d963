//! Error answers in the shapes Moodle's own clients parse.
//!
//! The Moodle app and integrations read errors from the body, not the status, so every refusal
//! carries a Moodle-shaped body: REST JSON or XML, a SOAP or XML-RPC fault for those servers, and
//! token.php's own `{"error","errorcode"}`. Bodies are built from fixed texts only: no request
//! value (and so never a token) is echoed.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::webservice::entry::EntryKind;
use crate::webservice::entry::WsFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorShape {
    Json,
    Xml,
    SoapFault,
    XmlRpcFault,
    TokenJson,
}

pub(crate) fn shape_for(entry: EntryKind, format: WsFormat) -> ErrorShape {
    match (entry, format) {
        (EntryKind::Token, _) => ErrorShape::TokenJson,
        (EntryKind::Soap, _) => ErrorShape::SoapFault,
        (EntryKind::XmlRpc, _) => ErrorShape::XmlRpcFault,
        (_, WsFormat::Json) => ErrorShape::Json,
        (_, WsFormat::Xml) => ErrorShape::Xml,
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#039;")
}

#[derive(serde::Serialize)]
struct JsonError<'a> {
    exception: &'a str,
    errorcode: &'a str,
    message: &'a str,
}

#[derive(serde::Serialize)]
struct TokenError<'a> {
    error: &'a str,
    errorcode: &'a str,
}

/// Builds the error answer. `retry_after` (seconds) becomes a Retry-After header.
pub(crate) fn error_response(
    status: StatusCode,
    shape: ErrorShape,
    errorcode: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response<ProxyBody> {
    let (content_type, text) = match shape {
        // Keys in Moodle's order (`exception` first; token.php: `error` first), not the
        // alphabetical order `json!` would give: some clients and log scanners read error
        // bodies by their first key.
        ErrorShape::Json => (
            "application/json; charset=utf-8",
            serde_json::to_string(&JsonError {
                exception: "moodle_exception",
                errorcode,
                message,
            })
            .unwrap_or_default(),
        ),
        ErrorShape::TokenJson => (
            "application/json; charset=utf-8",
            serde_json::to_string(&TokenError {
                error: message,
                errorcode,
            })
            .unwrap_or_default(),
        ),
        ErrorShape::Xml => (
            "application/xml; charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<EXCEPTION class=\"moodle_exception\">\n<ERRORCODE>{}</ERRORCODE>\n<MESSAGE>{}</MESSAGE>\n</EXCEPTION>\n",
                xml_escape(errorcode),
                xml_escape(message)
            ),
        ),
        ErrorShape::SoapFault => (
            "text/xml; charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>moodle_exception</faultcode><faultstring>{}</faultstring><detail>{}</detail></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>\n",
                xml_escape(message),
                xml_escape(errorcode)
            ),
        ),
        ErrorShape::XmlRpcFault => (
            "text/xml; charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>{}</int></value></member><member><name>faultString</name><value><string>{}</string></value></member></struct></value></fault></methodResponse>\n",
                status.as_u16(),
                xml_escape(message)
            ),
        ),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(r: Response<ProxyBody>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn shapes() {
        let r = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorShape::Json,
            "toomanyrequests",
            "Slow <down>",
            Some(3),
        );
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json; charset=utf-8");
        let body = text(r).await;
        assert!(
            body.starts_with(r#"{"exception":"moodle_exception","errorcode":"toomanyrequests","#),
            "Moodle's key order: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"], "Slow <down>");
        assert_eq!(
            crate::webservice::outcome::sniff_exception(body.as_bytes()),
            Some((
                Some("moodle_exception".into()),
                Some("toomanyrequests".into())
            ))
        );

        let r = error_response(
            StatusCode::FORBIDDEN,
            ErrorShape::Xml,
            "accessexception",
            "a & <b>",
            None,
        );
        assert!(r.headers().get(RETRY_AFTER).is_none());
        assert_eq!(
            text(r).await,
            "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<EXCEPTION class=\"moodle_exception\">\n<ERRORCODE>accessexception</ERRORCODE>\n<MESSAGE>a &amp; &lt;b&gt;</MESSAGE>\n</EXCEPTION>\n"
        );

        let r = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorShape::TokenJson,
            "toomanyrequests",
            "m",
            Some(1),
        );
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(v["error"], "m");
        assert!(v.get("exception").is_none());
        let r = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorShape::SoapFault,
            "x",
            "m",
            Some(1),
        );
        assert!(text(r).await.contains("<faultstring>m</faultstring>"));
        assert_eq!(shape_for(EntryKind::Rest, WsFormat::Xml), ErrorShape::Xml);
        assert_eq!(
            shape_for(EntryKind::Token, WsFormat::Xml),
            ErrorShape::TokenJson
        );
    }
}
