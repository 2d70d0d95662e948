//! `GET /quotas` (on the admin listener): every limited credential by fingerprint, with what is left in
//! each window.

use super::customer::ProviderRuntime;
use super::route::RouteError;
use super::BoxError;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response};
use http_body_util::Full;
use serde_json::json;
use std::sync::Arc;

/// The answer to `GET /quotas`; any other method is a 405.
pub(crate) async fn quotas(
    providers: &[Arc<ProviderRuntime>],
    method: &Method,
) -> Result<Response<Full<Bytes>>, BoxError> {
    if method != Method::GET {
        return Err(RouteError::OnlyGet(method.clone()).into());
    }
    let mut quotas = Vec::new();
    for limiter in providers.iter().filter_map(|p| p.limiter.as_ref()) {
        if !limiter.quota().is_unlimited() {
            quotas.push(limiter.describe().await?);
        }
    }
    let body = serde_json::to_vec(&json!({ "quotas": quotas })).expect("JSON serialises");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
