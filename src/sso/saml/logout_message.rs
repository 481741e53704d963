//! LogoutRequest and LogoutResponse: built and read here, because samael's LogoutRequest type
//! reads SessionIndex and the NameID Format from the wrong places (attribute for element and
//! the reverse) and it has no reading of incoming logout messages at all. Both messages are
//! small and flat; every value written is XML-escaped, every value read comes from a document
//! parsed without a DTD.

use chrono::{DateTime, SecondsFormat, Utc};
use roxmltree::{Document, Node, ParsingOptions};

use super::attributes::SamlSubject;

const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(crate) const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// A LogoutRequest as read from the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogoutRequest {
    pub id: String,
    pub issuer: Option<String>,
    pub destination: Option<String>,
    pub issue_instant: DateTime<Utc>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    pub name_id: String,
    pub session_indexes: Vec<String>,
}

/// A LogoutResponse as read from the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogoutResponse {
    pub in_response_to: Option<String>,
    pub issuer: Option<String>,
    pub destination: Option<String>,
    pub status: String,
}

fn parse_doc(xml: &str) -> Result<Document<'_>, String> {
    Document::parse_with_options(
        xml,
        ParsingOptions {
            allow_dtd: false,
            ..ParsingOptions::default()
        },
    )
    .map_err(|e| format!("not well-formed XML without a DTD: {e}"))
}

fn is(node: Node, namespace: &str, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(namespace)
}

fn child_text(node: Node, namespace: &str, name: &str) -> Option<String> {
    node.children()
        .find(|c| is(*c, namespace, name))
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
}

fn time(node: Node, attr: &str) -> Result<Option<DateTime<Utc>>, String> {
    node.attribute(attr)
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("{attr} {t:?} is not a time"))
        })
        .transpose()
}

pub(crate) fn read_request(xml: &str) -> Result<LogoutRequest, String> {
    let doc = parse_doc(xml)?;
    let root = doc.root_element();
    if !is(root, PROTOCOL, "LogoutRequest") {
        return Err("the root element is not a samlp:LogoutRequest".into());
    }
    let name_ids: Vec<Node> = root
        .children()
        .filter(|c| is(*c, ASSERTION, "NameID"))
        .collect();
    let [name_id] = name_ids[..] else {
        return Err("a LogoutRequest needs exactly one plain NameID".into());
    };
    Ok(LogoutRequest {
        id: root
            .attribute("ID")
            .filter(|i| !i.is_empty())
            .ok_or("the LogoutRequest has no ID")?
            .to_string(),
        issuer: child_text(root, ASSERTION, "Issuer"),
        destination: root.attribute("Destination").map(str::to_string),
        issue_instant: time(root, "IssueInstant")?
            .ok_or("the LogoutRequest has no IssueInstant")?,
        not_on_or_after: time(root, "NotOnOrAfter")?,
        name_id: name_id.text().unwrap_or("").trim().to_string(),
        session_indexes: root
            .children()
            .filter(|c| is(*c, PROTOCOL, "SessionIndex"))
            .filter_map(|c| c.text().map(|t| t.trim().to_string()))
            .collect(),
    })
}

pub(crate) fn read_response(xml: &str) -> Result<LogoutResponse, String> {
    let doc = parse_doc(xml)?;
    let root = doc.root_element();
    if !is(root, PROTOCOL, "LogoutResponse") {
        return Err("the root element is not a samlp:LogoutResponse".into());
    }
    let status = root
        .children()
        .find(|c| is(*c, PROTOCOL, "Status"))
        .and_then(|s| s.children().find(|c| is(*c, PROTOCOL, "StatusCode")))
        .and_then(|c| c.attribute("Value"))
        .ok_or("the LogoutResponse has no StatusCode")?
        .to_string();
    Ok(LogoutResponse {
        in_response_to: root.attribute("InResponseTo").map(str::to_string),
        issuer: child_text(root, ASSERTION, "Issuer"),
        destination: root.attribute("Destination").map(str::to_string),
        status,
    })
}

/// XML-escapes text and attribute values.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A LogoutRequest from this SP for `subject`.
pub(crate) fn build_request(
    id: &str,
    issuer: &str,
    destination: &str,
    subject: &SamlSubject,
) -> String {
    let format = subject
        .name_id_format
        .as_deref()
        .map(|f| format!(" Format=\"{}\"", escape(f)))
        .unwrap_or_default();
    let session = subject
        .session_index
        .as_deref()
        .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s)))
        .unwrap_or_default();
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" ID=\"{}\" \
         Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\"><saml:Issuer>{}</saml:Issuer>\
         <saml:NameID{format}>{}</saml:NameID>{session}</samlp:LogoutRequest>",
        escape(id),
        now(),
        escape(destination),
        escape(issuer),
        escape(&subject.name_id),
    )
}

/// A LogoutResponse from this SP answering `in_response_to`.
pub(crate) fn build_response(
    id: &str,
    issuer: &str,
    destination: &str,
    in_response_to: &str,
    status: &str,
) -> String {
    format!(
        "<samlp:LogoutResponse xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" ID=\"{}\" \
         Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\">\
         <saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{}\"/>\
         </samlp:Status></samlp:LogoutResponse>",
        escape(id),
        now(),
        escape(destination),
        escape(in_response_to),
        escape(issuer),
        escape(status),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_with_hostile_values() {
        let subject = SamlSubject {
            name_id: "a<b&\"c".into(),
            name_id_format: Some("urn:x\"y".into()),
            session_index: Some("_s1".into()),
        };
        let xml = build_request("_r1", "https://sp/</x>", "https://idp/slo", &subject);
        let got = read_request(&xml).unwrap();
        assert_eq!(got.id, "_r1");
        assert_eq!(got.name_id, "a<b&\"c");
        assert_eq!(got.issuer.as_deref(), Some("https://sp/</x>"));
        assert_eq!(got.session_indexes, vec!["_s1".to_string()]);
    }

    #[test]
    fn response_round_trip() {
        let xml = build_response("_r2", "sp", "https://idp/slo", "_r1", SUCCESS);
        let got = read_response(&xml).unwrap();
        assert_eq!(got.in_response_to.as_deref(), Some("_r1"));
        assert_eq!(got.status, SUCCESS);
    }

    #[test]
    fn dtd_and_wrong_roots_refused() {
        let dtd = "<!DOCTYPE x [<!ENTITY a \"b\">]><samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>";
        assert!(read_request(dtd).is_err());
        assert!(read_request("<LogoutRequest/>").is_err());
        assert!(read_response("<x").is_err());
    }
}
