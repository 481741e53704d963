//! The MNet stage on the request path: `POST /mnet/xmlrpc/server.php` goes through the
//! inbound gateway (`inbound::decide`), `GET /mnet/publickey.php` is answered with the site's
//! certificate, and any other spelling of the server path (path info, doubled slashes,
//! percent-escapes, case) is refused, so nothing reaches Moodle's MNet server unchecked.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{self, ProxyBody};
use crate::context::{RequestContext, Seen, Watch};
use crate::route::{Route, MNET_PATH};
use crate::stage::{Flow, Stage, StageRequest};
use crate::state::State;
use crate::store::Store;

use super::fault;
use super::inbound::{self, Decision, Pending};
use super::MnetState;

/// The MNet stage (after sso, before forward).
pub(crate) struct MnetStage;

impl Stage for MnetStage {
    const NAME: &'static str = "mnet";

    async fn run(state: &Arc<State>, ctx: &mut RequestContext, req: &mut StageRequest) -> Flow {
        let Some(mnet) = &state.mnet else {
            return Flow::Next;
        };
        let Some(target) = target(ctx.route, req.parts.uri.path()) else {
            return Flow::Next;
        };
        match target {
            Target::PublicKey if req.parts.method == Method::GET => {
                ctx.note = Some("mnet_publickey");
                Flow::Answer(publickey_response(mnet))
            }
            Target::PublicKey => Flow::Next,
            Target::Alias => {
                ctx.note = Some("mnet_alias");
                mnet.metrics.refusals.with_label_values(&["alias"]).inc();
                Flow::Answer(refuse_transport())
            }
            Target::Server => Box::pin(run_server(state, mnet, ctx, req)).await,
        }
    }
}

async fn run_server(
    state: &Arc<State>,
    mnet: &Arc<MnetState>,
    ctx: &mut RequestContext,
    req: &mut StageRequest,
) -> Flow {
    if req.parts.method != Method::POST {
        ctx.note = Some("mnet_method");
        return Flow::Answer(method_not_allowed());
    }
    let limit = mnet.limits.max_bytes;
    let (prefix, complete) = match req.body.peek(limit.saturating_add(1)).await {
        Ok(prefix) => (prefix.clone(), false),
        Err(e) => {
            tracing::debug!(error = %e, "mnet: cannot read the call");
            ctx.note = Some("mnet_refused");
            let f = fault::TOO_LARGE;
            return Flow::Answer(xml_response(fault::fault_xml(f.code, f.text)));
        }
    };
    let complete = complete || req.body.complete();
    match server(mnet, &state.store, ctx.client_ip, &prefix, complete).await {
        Ok((signed, pending)) => {
            req.body.replace(signed);
            // Moodle must see the proxy's address, whatever its getremoteaddrconf reads: no
            // X-Forwarded-For / X-Real-IP, neither the proxy's own nor a client's copy.
            ctx.forward.x_forwarded_for = None;
            ctx.forward.x_real_ip = None;
            ctx.upstream_headers
                .remove(HeaderName::from_static("x-forwarded-for"));
            ctx.upstream_headers
                .remove(HeaderName::from_static("x-real-ip"));
            // The answer is read whole and re-sealed: it must come uncompressed.
            ctx.upstream_headers.remove(http::header::ACCEPT_ENCODING);
            ctx.upstream_headers.set(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml"),
            );
            ctx.watch(Box::new(Reseal {
                mnet: mnet.clone(),
                pending,
            }));
            Flow::Next
        }
        Err(answer) => {
            ctx.note = Some("mnet_refused");
            Flow::Answer(answer)
        }
    }
}

/// Waits for Moodle's answer to a forwarded call and re-seals it for the peer.
struct Reseal {
    /// The state the call was checked with (a reload may swap the shared one meanwhile).
    mnet: Arc<MnetState>,
    pending: Pending,
}

impl Watch for Reseal {
    fn response(self: Box<Self>, _ctx: &RequestContext, response: Response<ProxyBody>) -> Seen {
        Seen::Later(Box::pin(async move {
            let (parts, mut body) = response.into_parts();
            let mut whole = Vec::new();
            // A broken or oversized answer becomes fault 712 (an empty body is not MNet).
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            whole.extend_from_slice(d);
                        }
                    }
                    Err(_) => {
                        whole.clear();
                        break;
                    }
                }
                if whole.len() > self.mnet.max_answer {
                    whole.clear();
                    break;
                }
            }
            answer(&self.mnet, &self.pending, parts.status, &whole)
        }))
    }
}

/// Which MNet job a request is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `/mnet/xmlrpc/server.php`: the inbound gateway.
    Server,
    /// `GET /mnet/publickey.php`.
    PublicKey,
    /// Another spelling of the server path: refused.
    Alias,
}

/// Cheap for the requests it does not concern: a route check, then one path comparison.
pub(crate) fn target(route: Route, path: &str) -> Option<Target> {
    match route {
        Route::Mnet => Some(Target::Server),
        Route::Page if path == PUBLICKEY_PATH => Some(Target::PublicKey),
        Route::Page if is_server_alias(path) => Some(Target::Alias),
        _ => None,
    }
}

/// The gateway's answer for a server request whose body prefix is `body` (`complete` when it
/// is the whole body): Ok = forward this body to Moodle and re-seal its answer with `Pending`.
pub(crate) async fn server(
    mnet: &MnetState,
    store: &Store,
    client_ip: IpAddr,
    body: &[u8],
    complete: bool,
) -> Result<(Bytes, Pending), Response<ProxyBody>> {
    let now = super::now_unix();
    match inbound::decide(mnet, store, client_ip, body, complete, now).await {
        Decision::Forward { body, pending } => Ok((body, pending)),
        Decision::Answer {
            body,
            outcome,
            peer,
        } => {
            let peer = peer
                .as_ref()
                .map(|p| p.wwwroot.as_str())
                .unwrap_or("unknown");
            mnet.metrics
                .calls
                .with_label_values(&[peer, "other", outcome])
                .inc();
            if outcome != "keyswap" {
                mnet.metrics.refusals.with_label_values(&[outcome]).inc();
            }
            Err(xml_response(body))
        }
    }
}

/// Moodle's answer, re-signed and sealed for the peer; counts the call.
pub(crate) fn answer(
    mnet: &MnetState,
    pending: &Pending,
    status: StatusCode,
    body: &[u8],
) -> Response<ProxyBody> {
    let now = super::now_unix();
    let (sealed, outcome) = inbound::answer(mnet, pending, status, body, now);
    let method = if pending.peer.allows(&pending.method) {
        pending.method.as_str()
    } else {
        "other"
    };
    let m = &mnet.metrics;
    m.calls
        .with_label_values(&[pending.peer.wwwroot.as_str(), method, outcome])
        .inc();
    m.last_call
        .with_label_values(&[pending.peer.wwwroot.as_str()])
        .set(now);
    xml_response(sealed)
}

pub(crate) const PUBLICKEY_PATH: &str = "/mnet/publickey.php";

/// An XML-RPC answer as Moodle sends one (always HTTP 200).
pub(crate) fn xml_response(body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(body));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /mnet/publickey.php`: the site's current certificate, as Moodle publishes it.
pub(crate) fn publickey_response(state: &MnetState) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(state.current.cert_pem.clone()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A refusal for a request that reached the MNet server path in a way the gateway does not
/// take (not a POST, or another spelling of the path).
pub(crate) fn refuse_transport() -> Response<ProxyBody> {
    let f = fault::FORBIDDEN_TRANSPORT;
    xml_response(fault::fault_xml(f.code, f.text))
}

pub(crate) fn method_not_allowed() -> Response<ProxyBody> {
    let mut r = refuse_transport();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// True when a web server could resolve `path` to Moodle's MNet server script although it is
/// not spelled exactly so: `/mnet/xmlrpc/server.php/extra` (path info), `//mnet/...`,
/// `/mnet/./xmlrpc/...`, `%2e`-style escapes, other letter cases. Only looked at when the
/// path contains "server" in some case, so page requests pay one search.
pub(crate) fn is_server_alias(path: &str) -> bool {
    if path == MNET_PATH {
        return false;
    }
    let bytes = path.as_bytes();
    if memchr::memmem::find(bytes, b"server").is_none()
        && memchr::memmem::find(bytes, b"%").is_none()
        && !bytes.iter().any(|b| b.is_ascii_uppercase())
    {
        return false;
    }
    let decoded = percent_encoding::percent_decode(bytes).decode_utf8_lossy();
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let want = ["mnet", "xmlrpc", "server.php"];
    segments.len() >= want.len()
        && segments
            .iter()
            .zip(want)
            .all(|(s, w)| s.trim_end_matches(['.', ' ']).eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_of_the_server_path() {
        for alias in [
            "/mnet/xmlrpc/server.php/x",
            "//mnet/xmlrpc/server.php",
            "/mnet/./xmlrpc/server.php",
            "/mnet/x/../xmlrpc/server.php",
            "/mnet/xmlrpc/%73erver.php",
            "/MNET/xmlrpc/Server.php",
            "/mnet/xmlrpc/server.php.",
        ] {
            assert!(is_server_alias(alias), "{alias}");
        }
        for other in [
            MNET_PATH,
            "/course/view.php",
            "/mnet/publickey.php",
            "/server.php",
        ] {
            assert!(!is_server_alias(other), "{other}");
        }
    }
}
