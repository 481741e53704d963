//! The one shape every stage has. A stage is an async step over the request context and the
//! request: it may answer the request itself ([`Flow::Answer`]); read a bounded prefix of the
//! body and hand it on unchanged (`RequestBody::peek`, in `body::request`) or replace it; set
//! or remove upstream request headers (`ctx.upstream_headers`); and ask to see the outcome
//! (`ctx.watch`, see `context::Watch`) instead of being called back by name. The pipeline only
//! says the order.

use std::future::Future;
use std::sync::Arc;

use http::{request, Response};

use crate::body::ProxyBody;
use crate::context::RequestContext;
use crate::proxy::headers::HeaderKinds;
use crate::state::State;

pub(crate) use crate::body::request::{BodyLimits, RequestBody};

/// What a stage decided.
pub(crate) enum Flow {
    /// Go on to the next stage.
    Next,
    /// Answer the client with this; no later stage runs and nothing goes upstream.
    Answer(Response<ProxyBody>),
}

/// A step of the pipeline. Each stage is a unit struct implementing this.
pub(crate) trait Stage {
    /// The stage's name, for logs and the module docs.
    const NAME: &'static str;

    /// Runs the stage. It decides itself whether it applies (most look at `ctx.route` first):
    /// keep that first check cheap, it runs on every request.
    fn run(
        state: &Arc<State>,
        ctx: &mut RequestContext,
        req: &mut StageRequest,
    ) -> impl Future<Output = Flow> + Send;
}

/// The request as the stages see it: its head, and a body they may peek at.
pub(crate) struct StageRequest {
    pub parts: request::Parts,
    pub body: RequestBody,
    /// An HTTP/1.1 Upgrade (WebSocket) handshake, as the sanitize stage found it.
    pub upgrade: bool,
    /// The kinds of header the request carries, found in one pass when it arrived.
    pub kinds: HeaderKinds,
}
