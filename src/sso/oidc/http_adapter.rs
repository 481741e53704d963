//! The `openidconnect` crate's HTTP client trait over the SSO module's own client.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

use crate::sso::outbound::{HttpClient, HttpError};

/// Lends the SSO client to the crate for one call (it never follows redirects).
pub(crate) struct CrateHttp<'a>(pub &'a HttpClient);

impl<'c> AsyncHttpClient<'c> for CrateHttp<'_> {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let resp = self
                .0
                .send(http::Request::from_parts(parts, Bytes::from(body)))
                .await?;
            let (parts, body) = resp.into_parts();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        })
    }
}
