//! The calling side of MNet, as Moodle's mnet_xmlrpc_client does it: sign an XML-RPC call
//! with the site's key, seal it to the peer, and open, verify and read the peer's answer.
//! Used by `moodle-edge mnet call`; the outbound gateway would use it too.

use super::envelope::{self, Kind};
use super::peers::Peer;
use super::xmlrpc::{self, MethodCall, MethodResponse};
use super::{seal, sign, xml, MnetState};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot sign or seal: {0}")]
    Crypto(String),
    #[error("the answer is not an MNet message: {0}")]
    Answer(String),
}

/// The sealed, signed envelope for `call` to `peer`.
pub fn seal_call(
    state: &MnetState,
    peer: &Peer,
    call: &MethodCall,
    now: i64,
) -> Result<String, CallError> {
    let payload = xmlrpc::write_call(call);
    let crypto = |e: &dyn std::fmt::Display| CallError::Crypto(e.to_string());
    let sig = sign::sign(payload.as_bytes(), &state.current.key).map_err(|e| crypto(&e))?;
    let signed = envelope::write_signed(payload.as_bytes(), &sig, &state.site_wwwroot, now);
    let (data, key) =
        seal::seal(signed.as_bytes(), &peer.cert.load().key).map_err(|e| crypto(&e))?;
    Ok(envelope::write_encrypted(&data, &key, &state.site_wwwroot))
}

/// A signed, unsealed message from the site (what Moodle answers a signed, unencrypted call).
pub fn sign_message(state: &MnetState, payload: &[u8], now: i64) -> Result<String, CallError> {
    let sig =
        sign::sign(payload, &state.current.key).map_err(|e| CallError::Crypto(e.to_string()))?;
    Ok(envelope::write_signed(
        payload,
        &sig,
        &state.site_wwwroot,
        now,
    ))
}

/// What the peer answered, and how it came.
#[derive(Debug)]
pub struct Answer {
    pub response: MethodResponse,
    /// The signed answer's timestamp (None when it came unsigned).
    pub timestamp: Option<i64>,
    pub encrypted: bool,
    /// Opened with an earlier key of ours (the peer has not learnt our current one).
    pub old_key: bool,
}

/// Opens (current key, then history), verifies against `peer` and reads an answer.
pub fn open_answer(state: &MnetState, peer: &Peer, body: &[u8]) -> Result<Answer, CallError> {
    let bad = |e: &dyn std::fmt::Display| CallError::Answer(e.to_string());
    let text = xml::decode(body);
    let (signed_bytes, encrypted, old_key) = match envelope::kind(&text) {
        Kind::Encrypted => {
            let m = envelope::parse_encrypted(&text, &state.limits).map_err(|e| bad(&e))?;
            let keys = std::iter::once(&state.current).chain(state.history.iter());
            let mut opened = None;
            for (i, k) in keys.enumerate() {
                if let Some(p) = seal::open(&m.data, &m.wrapped_key, &k.key) {
                    opened = Some((p, i > 0));
                    break;
                }
            }
            let (p, old) = opened.ok_or_else(|| bad(&"cannot open with any of our keys"))?;
            (p, true, old)
        }
        _ => (body.to_vec(), false, false),
    };
    let signed_text = xml::decode(&signed_bytes);
    let (payload, timestamp) = if envelope::kind(&signed_text) == Kind::Signed {
        let m = envelope::parse_signed(&signed_text, &state.limits).map_err(|e| bad(&e))?;
        if !sign::verify(&m.payload, &m.signature, &peer.cert.load().key) {
            return Err(bad(&"the signature does not match the peer's certificate"));
        }
        (m.payload, Some(m.timestamp))
    } else {
        (signed_bytes, None)
    };
    let response =
        xmlrpc::parse_response(&xml::decode(&payload), &state.limits).map_err(|e| bad(&e))?;
    Ok(Answer {
        response,
        timestamp,
        encrypted,
        old_key,
    })
}
