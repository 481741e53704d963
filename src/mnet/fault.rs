//! Faults: XML-RPC `methodResponse` faults laid out as Moodle's mnet_server_fault_xml()
//! writes them (HTTP 200, an int faultCode, an escaped faultString), with Moodle's codes where
//! Moodle refuses the same thing, and codes of our own for what Moodle does not check at all
//! (timestamps, replay). The table is in docs/mnet.md.

use super::xml;

/// Why a message was refused: its code, its text and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: i64,
    pub text: &'static str,
    /// The `reason` label of `moodle_edge_mnet_refusals_total`.
    pub reason: &'static str,
}

const fn r(code: i64, reason: &'static str, text: &'static str) -> Refusal {
    Refusal { code, text, reason }
}

/// XML that is not well formed, too large, too deep or carries a DTD (the XML-RPC
/// interoperability code for "parse error. not well formed").
pub(crate) const NOT_WELL_FORMED: Refusal = r(
    -32700,
    "malformed_xml",
    "parse error: XML not well formed or over the limits",
);
pub(crate) const TOO_LARGE: Refusal = r(
    -32700,
    "too_large",
    "parse error: message over the size limit",
);
pub(crate) const FORBIDDEN_TRANSPORT: Refusal = r(
    7021,
    "unencrypted",
    "forbidden-transport: only encrypted MNet messages are accepted",
);
pub(crate) const WRONG_WWWROOT: Refusal = r(
    7020,
    "unknown_peer",
    "wrong-wwwroot: this host is not a registered MNet peer",
);
pub(crate) const WWWROOT_MISMATCH: Refusal = r(
    7020,
    "wwwroot_mismatch",
    "wrong-wwwroot: the signed wwwroot differs from the envelope's",
);
pub(crate) const WRONG_IP: Refusal = r(
    7017,
    "network",
    "wrong-ip: the peer may not call from this address",
);
pub(crate) const BAD_ENVELOPE: Refusal = r(
    7023,
    "bad_envelope",
    "encryption-invalid: malformed encryptedMessage",
);
pub(crate) const CANNOT_DECRYPT: Refusal = r(
    7023,
    "cannot_decrypt",
    "encryption-invalid: cannot decrypt with any of this site's keys",
);
pub(crate) const BAD_SIGNATURE: Refusal = r(
    710,
    "bad_signature",
    "verifysignature-invalid: the signature does not match the peer's certificate",
);
pub(crate) const STALE: Refusal = r(
    7040,
    "stale",
    "the message timestamp is too far in the past",
);
pub(crate) const FUTURE: Refusal = r(
    7040,
    "future",
    "the message timestamp is too far in the future",
);
pub(crate) const BAD_METHOD: Refusal =
    r(713, "bad_method", "nosuchfunction: malformed method name");
pub(crate) const NOT_ALLOWED: Refusal = r(
    707,
    "method_not_allowed",
    "nosuchfunction: this peer may not call this method",
);
pub(crate) const REPLAYED: Refusal = r(7041, "replay", "this message was seen before");
pub(crate) const STORE_DOWN: Refusal = r(7000, "store_error", "the replay cache is unavailable");
pub(crate) const UPSTREAM: Refusal = r(
    712,
    "upstream_error",
    "phperror: the site did not answer with an MNet message",
);
pub(crate) const NEW_KEY_REASON: &str = "old_key";

/// The fault as Moodle lays it out; `text` is escaped here.
pub(crate) fn fault_xml(code: i64, text: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<methodResponse>
   <fault>
      <value>
         <struct>
            <member>
               <name>faultCode</name>
               <value><int>{code}</int></value>
            </member>
            <member>
               <name>faultString</name>
               <value><string>{}</string></value>
            </member>
         </struct>
      </value>
   </fault>
</methodResponse>"#,
        xml::escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mnet::xml::XmlLimits;
    use crate::mnet::xmlrpc::{parse_response, MethodResponse};

    #[test]
    fn fault_parses_back() {
        let x = fault_xml(7025, "-----BEGIN CERTIFICATE-----\n<&>\n");
        assert_eq!(
            parse_response(&x, &XmlLimits::default()).unwrap(),
            MethodResponse::Fault {
                code: 7025,
                string: "-----BEGIN CERTIFICATE-----\n<&>\n".into()
            }
        );
    }
}
