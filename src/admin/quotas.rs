//! `GET /quotas`: every limited credential by fingerprint, with what is left in each window.

use crate::gateway::{BoxError, Gateway};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body_util::Full;
use serde_json::json;

pub(super) async fn quotas(gateway: &Gateway) -> Result<Response<Full<Bytes>>, BoxError> {
    let mut quotas = Vec::new();
    for limiter in gateway.limiters() {
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
