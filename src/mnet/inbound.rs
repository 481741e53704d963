//! The inbound gateway's decision for one `POST /mnet/xmlrpc/server.php` body: refuse it with
//! a fault answered at the edge, answer it here (`system/keyswap`), or forward the opened,
//! still-signed message to Moodle. The phases are listed in the module doc of `mnet`.
//! Pure but for the replay cache, so the bench and the unit tests run it without a server.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::envelope::{self, Kind, SignedMessage};
use super::fault::{self, Refusal};
use super::peers::Peer;
pub use super::respond::Pending;
use super::respond::{self, Wrap};
use super::xmlrpc::{self, MethodResponse, Value};
use super::{seal, sign, xml, MnetState};
use crate::store::Store;

/// What to do with a message.
pub enum Decision {
    /// Send `body` (the peer's signedMessage, exactly as it signed it) to Moodle, and the
    /// answer back through [`answer`].
    Forward { body: Bytes, pending: Pending },
    /// Answer at the edge with this XML (HTTP 200, text/xml).
    Answer {
        body: Vec<u8>,
        /// The metrics outcome ("keyswap" or a refusal reason).
        outcome: &'static str,
        /// The configured peer it concerned, when known.
        peer: Option<Arc<Peer>>,
    },
}

/// A message that passed every check but the replay cache.
pub struct Checked {
    pub signed_xml: Bytes,
    pub signature: Vec<u8>,
    pub pending: Pending,
}

/// Decides about one request body. `complete` is false when the body was longer than the
/// prefix read (the size limit).
pub async fn decide(
    state: &MnetState,
    store: &Store,
    client_ip: IpAddr,
    body: &[u8],
    complete: bool,
    now: i64,
) -> Decision {
    let checked = match check(state, client_ip, body, complete, now) {
        Ok(c) => c,
        Err(answer) => match signature_failed_for(&answer) {
            // The peer's key may have changed: fetch it (bounded) and, when the policy took
            // a new one, check the call again.
            Some(peer) if super::key_change::refetch(state, &peer, now).await => {
                match check(state, client_ip, body, complete, now) {
                    Ok(c) => c,
                    Err(answer) => return answer,
                }
            }
            _ => {
                let mut answer = answer;
                if let Some(peer) = keyswap_to_confirm(&answer) {
                    super::key_change::refetch(state, &peer, now).await;
                    if let Decision::Answer { outcome, .. } = &mut answer {
                        *outcome = "keyswap";
                    }
                }
                return answer;
            }
        },
    };
    let peer = &checked.pending.peer;
    let refuse = |r: Refusal| {
        refusal(
            state,
            r,
            Wrap::sealed(peer, &state.current),
            now,
            Some(peer),
        )
    };
    let timestamp = match state.replay_key {
        super::config::ReplayKey::Content => None,
        super::config::ReplayKey::ContentAndTimestamp => Some(checked.pending.request_ts),
    };
    let seen = super::replay::first_sighting(
        store,
        &peer.wwwroot,
        &checked.signature,
        timestamp,
        state.replay_ttl,
    );
    match seen.await {
        Ok(true) => Decision::Forward {
            body: checked.signed_xml,
            pending: checked.pending,
        },
        Ok(false) => refuse(fault::REPLAYED),
        Err(e) => {
            tracing::warn!(error = %e, "mnet: replay cache unavailable; refusing the call");
            refuse(fault::STORE_DOWN)
        }
    }
}

/// The peer whose keyswap offered a changed key under `accept` (to be confirmed by a fetch).
fn keyswap_to_confirm(answer: &Decision) -> Option<Arc<Peer>> {
    match answer {
        Decision::Answer {
            outcome,
            peer: Some(peer),
            ..
        } if *outcome == KEYSWAP_CONFIRM => Some(peer.clone()),
        _ => None,
    }
}

/// What `check` answers for a keyswap whose changed key is to be confirmed; `decide` fetches
/// the peer's key and reports it as "keyswap".
pub(crate) const KEYSWAP_CONFIRM: &str = "keyswap_changed";

/// The peer whose signature failed, when `answer` is that refusal.
fn signature_failed_for(answer: &Decision) -> Option<Arc<Peer>> {
    match answer {
        Decision::Answer {
            outcome,
            peer: Some(peer),
            ..
        } if *outcome == fault::BAD_SIGNATURE.reason => Some(peer.clone()),
        _ => None,
    }
}

fn refusal(
    state: &MnetState,
    r: Refusal,
    wrap: Wrap<'_>,
    now: i64,
    peer: Option<&Arc<Peer>>,
) -> Decision {
    tracing::info!(
        code = r.code,
        reason = r.reason,
        peer = peer.map(|p| p.wwwroot.as_str()).unwrap_or("unknown"),
        "mnet: refused at the edge"
    );
    Decision::Answer {
        body: respond::wrap(
            state,
            &wrap,
            fault::fault_xml(r.code, r.text).as_bytes(),
            now,
        ),
        outcome: r.reason,
        peer: peer.cloned(),
    }
}

/// Every check but the replay cache.
pub fn check(
    state: &MnetState,
    client_ip: IpAddr,
    body: &[u8],
    complete: bool,
    now: i64,
) -> Result<Checked, Decision> {
    let plain = |r: Refusal| refusal(state, r, Wrap::Plain, now, None);
    if !complete || body.len() > state.limits.max_bytes {
        return Err(plain(fault::TOO_LARGE));
    }
    let text = xml::decode(body);
    match envelope::kind(&text) {
        Kind::Encrypted => {}
        // An unencrypted call from outside: only the proxy itself is a trusted host.
        Kind::Signed => return Err(plain(fault::FORBIDDEN_TRANSPORT)),
        Kind::Plain => return Err(plain_call(state, &text, now)),
    }

    // 1-2. the envelope and the peer it names
    let sealed = envelope::parse_encrypted(&text, &state.limits).map_err(|e| {
        tracing::debug!(error = %e, "mnet: bad encryptedMessage");
        plain(match e {
            envelope::EnvelopeError::Xml(_) => fault::NOT_WELL_FORMED,
            _ => fault::BAD_ENVELOPE,
        })
    })?;
    let Some(peer) = state.peers.get(&sealed.wwwroot) else {
        return Err(plain(fault::WRONG_WWWROOT));
    };
    if !peer.allows_network(client_ip) {
        return Err(refusal(
            state,
            fault::WRONG_IP,
            Wrap::Plain,
            now,
            Some(peer),
        ));
    }

    // 3. open: the current key, then the history
    let started = Instant::now();
    let opened = seal::open(&sealed.data, &sealed.wrapped_key, &state.current.key)
        .map(|p| (p, &state.current))
        .or_else(|| {
            state.history.iter().find_map(|old| {
                seal::open(&sealed.data, &sealed.wrapped_key, &old.key).map(|p| (p, old))
            })
        });
    state.metrics.observe_crypto("open", started);
    let Some((signed_bytes, opened_with)) = opened else {
        return Err(refusal(
            state,
            fault::CANNOT_DECRYPT,
            Wrap::Plain,
            now,
            Some(peer),
        ));
    };
    // 4. the signature. Whatever was opened but is not a well-formed signedMessage gets the
    // very answer a seal that does not open gets: a different one would tell an attacker
    // that a chosen RSA ciphertext had valid PKCS#1 v1.5 padding (a Bleichenbacher oracle).
    let signed_text = xml::decode(&signed_bytes);
    let signed = match envelope::kind(&signed_text) {
        Kind::Signed => envelope::parse_signed(&signed_text, &state.limits).ok(),
        _ => None,
    };
    let Some(signed) = signed else {
        tracing::debug!(peer = %peer.wwwroot, "mnet: opened, but not a valid signedMessage");
        return Err(refusal(
            state,
            fault::CANNOT_DECRYPT,
            Wrap::Plain,
            now,
            Some(peer),
        ));
    };
    let signed_wrap = Wrap::sealed(peer, opened_with);
    let refuse = |r: Refusal| refusal(state, r, Wrap::sealed(peer, opened_with), now, Some(peer));
    if super::peers::normalize(&signed.wwwroot) != peer.wwwroot {
        return Err(refuse(fault::WWWROOT_MISMATCH));
    }
    let started = Instant::now();
    let verified = sign::verify(&signed.payload, &signed.signature, &peer.cert.load().key);
    state.metrics.observe_crypto("verify", started);
    if !verified {
        return Err(refuse(fault::BAD_SIGNATURE));
    }
    if !std::ptr::eq(opened_with, &state.current) {
        // Sealed to an old certificate: tell the peer the current one, as Moodle does, signed
        // with the key it used so that it can check the news.
        tracing::info!(peer = %peer.wwwroot, "mnet: message sealed to an old key; answered 7025");
        return Err(Decision::Answer {
            body: respond::wrap(
                state,
                &signed_wrap,
                fault::fault_xml(7025, &state.current.cert_pem).as_bytes(),
                now,
            ),
            outcome: fault::NEW_KEY_REASON,
            peer: Some(peer.clone()),
        });
    }

    // 5. timestamp, method
    check_time(state, &signed, now).map_err(refuse)?;
    let payload_text = xml::decode(&signed.payload);
    let call = xmlrpc::parse_call(&payload_text, &state.limits).map_err(|e| {
        tracing::debug!(error = %e, "mnet: bad methodCall");
        refuse(fault::NOT_WELL_FORMED)
    })?;
    if !method_name_ok(&call.method) {
        return Err(refuse(fault::BAD_METHOD));
    }
    if !peer.allows(&call.method) {
        return Err(refuse(fault::NOT_ALLOWED));
    }
    Ok(Checked {
        signed_xml: Bytes::from(signed_bytes),
        signature: signed.signature,
        pending: Pending {
            peer: peer.clone(),
            method: call.method,
            request_ts: signed.timestamp,
            received: Instant::now(),
        },
    })
}

/// Moodle's answer to a forwarded call, re-signed and sealed for the peer (see
/// `respond::answer`); the second value is the metrics outcome.
pub fn answer(
    state: &MnetState,
    pending: &Pending,
    status: http::StatusCode,
    body: &[u8],
    now: i64,
) -> (Vec<u8>, &'static str) {
    respond::answer(state, pending, status, body, now)
}

fn check_time(state: &MnetState, signed: &SignedMessage, now: i64) -> Result<(), Refusal> {
    let skew = i64::try_from(state.max_clock_skew.as_secs()).unwrap_or(i64::MAX);
    if signed.timestamp < now.saturating_sub(skew) {
        return Err(fault::STALE);
    }
    if signed.timestamp > now.saturating_add(skew) {
        return Err(fault::FUTURE);
    }
    Ok(())
}

/// Moodle's own check of a method name (mnet_server_dispatch):
/// `^[A-Za-z0-9]+/[A-Za-z0-9/_.-]+(\.php/)?[A-Za-z0-9_-]+$`.
fn method_name_ok(method: &str) -> bool {
    let Some((head, rest)) = method.split_once('/') else {
        return false;
    };
    let tail_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    !head.is_empty()
        && head.chars().all(|c| c.is_ascii_alphanumeric())
        && rest.len() >= 2
        && rest.chars().all(|c| tail_ok(c) || c == '/' || c == '.')
        && rest.chars().last().is_some_and(tail_ok)
}

/// An unencrypted, unsigned call: `system/keyswap` is answered here; anything else is refused.
fn plain_call(state: &MnetState, text: &str, now: i64) -> Decision {
    let plain = |r: Refusal| refusal(state, r, Wrap::Plain, now, None);
    let call = match xmlrpc::parse_call(text, &state.limits) {
        Ok(c) => c,
        Err(_) => return plain(fault::NOT_WELL_FORMED),
    };
    if call.method != "system/keyswap" && call.method != "system.keyswap" {
        return plain(fault::FORBIDDEN_TRANSPORT);
    }
    let wwwroot = match call.params.first() {
        Some(Value::String(w)) => w.as_str(),
        _ => "",
    };
    let peer = state.peers.get(wwwroot);
    if peer.is_none() && state.keyswap == super::config::KeyswapPolicy::Peers {
        return plain(fault::WRONG_WWWROOT);
    }
    let mut outcome = "keyswap";
    if let (Some(peer), Some(Value::String(pem))) = (peer, call.params.get(1)) {
        match super::keys::PeerCert::from_pem(pem, "keyswap") {
            Ok(c) => {
                if super::key_change::offered_by_keyswap(state, peer, c) {
                    outcome = KEYSWAP_CONFIRM;
                }
            }
            Err(_) => {
                tracing::warn!(peer = %peer.wwwroot, "mnet: keyswap offered no valid certificate")
            }
        }
    }
    Decision::Answer {
        body: xmlrpc::write_response(&MethodResponse::Value(Value::String(
            state.current.cert_pem.clone(),
        )))
        .into_bytes(),
        outcome,
        peer: peer.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moodle_method_names() {
        for ok in [
            "system/listMethods",
            "auth/mnet/auth.php/user_authorise",
            "mod/forum/lib.php/forum_add_instance",
            "system/keyswap",
        ] {
            assert!(method_name_ok(ok), "{ok}");
        }
        for bad in [
            "system.listMethods",
            "/etc/passwd",
            "a/",
            "a/b.",
            "a/b/",
            "a b/c",
            "a/b c",
            "",
        ] {
            assert!(!method_name_ok(bad), "{bad}");
        }
    }
}
