//! The answers the proxy sends a peer: Moodle's answer to a forwarded call, re-signed with the
//! site's current key and sealed to the peer's certificate, and the faults the edge raises,
//! wrapped as Moodle would wrap them for the request they answer (signed if it was signed,
//! sealed if it was sealed).

use std::sync::Arc;
use std::time::Instant;

use super::envelope::{self, Kind};
use super::fault;
use super::keys::KeyPair;
use super::peers::Peer;
use super::{seal, sign, xml, MnetState};

/// How an answer is wrapped.
pub(crate) enum Wrap<'a> {
    /// As is: the request was not sealed (or could not be opened).
    Plain,
    /// Sealed to `peer`, and signed first when `sign_with` is set.
    Sealed {
        peer: &'a Peer,
        sign_with: Option<&'a KeyPair>,
    },
}

impl<'a> Wrap<'a> {
    pub(crate) fn sealed(peer: &'a Peer, key: &'a KeyPair) -> Wrap<'a> {
        Wrap::Sealed {
            peer,
            sign_with: Some(key),
        }
    }
}

/// A forwarded call, waiting for Moodle's answer (made by `inbound`, answered by [`answer`]).
pub struct Pending {
    pub peer: Arc<Peer>,
    pub method: String,
    /// The peer's own clock when it sent the call: bounds the answer's timestamp.
    pub request_ts: i64,
    pub received: Instant,
}

/// Wraps an XML-RPC answer; `timestamp` goes into the signature envelope. A crypto failure
/// (which a loaded, checked key does not have) falls back to the plain answer.
pub(crate) fn wrap(state: &MnetState, wrap: &Wrap<'_>, answer: &[u8], timestamp: i64) -> Vec<u8> {
    let Wrap::Sealed { peer, sign_with } = wrap else {
        return answer.to_vec();
    };
    let inner = match sign_with {
        Some(key) => {
            let started = Instant::now();
            let signature = sign::sign(answer, &key.key);
            state.metrics.observe_crypto("sign", started);
            match signature {
                Ok(sig) => envelope::write_signed(answer, &sig, &state.site_wwwroot, timestamp)
                    .into_bytes(),
                Err(e) => {
                    tracing::error!(error = %e, "mnet: cannot sign an answer");
                    return answer.to_vec();
                }
            }
        }
        None => answer.to_vec(),
    };
    let started = Instant::now();
    let sealed = seal::seal(&inner, &peer.cert.load().key);
    state.metrics.observe_crypto("seal", started);
    match sealed {
        Ok((data, key)) => envelope::write_encrypted(&data, &key, &state.site_wwwroot).into_bytes(),
        Err(e) => {
            tracing::error!(error = %e, peer = %peer.wwwroot, "mnet: cannot seal an answer");
            inner
        }
    }
}

/// Moodle's answer to a forwarded call, made ready for the peer. Moodle signed it (the
/// request reached it signed); its XML-RPC text is re-signed with the proxy's current key,
/// so the peer sees one site key even if Moodle's own has drifted, and its timestamp is the
/// peer's send time plus the time the call took here, capped by our clock, so it is never
/// ahead of the peer's clock by more than the two clocks' own difference.
pub(crate) fn answer(
    state: &MnetState,
    pending: &Pending,
    status: http::StatusCode,
    body: &[u8],
    now: i64,
) -> (Vec<u8>, &'static str) {
    let elapsed = i64::try_from(pending.received.elapsed().as_secs()).unwrap_or(0);
    let timestamp = now.min(pending.request_ts.saturating_add(elapsed));
    let wrapping = Wrap::sealed(&pending.peer, &state.current);
    let text = xml::decode(body);
    let payload = if status.is_success() && envelope::kind(&text) == Kind::Signed {
        envelope::parse_signed(&text, &state.limits)
            .ok()
            .map(|m| m.payload)
    } else {
        None
    };
    match payload {
        Some(p) => (wrap(state, &wrapping, &p, timestamp), "forwarded"),
        None => {
            tracing::warn!(
                status = status.as_u16(),
                "mnet: Moodle's answer is not a signed MNet message (is the proxy in mnet_trusted_hosts?)"
            );
            let f = fault::UPSTREAM;
            (
                wrap(
                    state,
                    &wrapping,
                    &fault::fault_xml(f.code, f.text).into_bytes(),
                    timestamp,
                ),
                f.reason,
            )
        }
    }
}
