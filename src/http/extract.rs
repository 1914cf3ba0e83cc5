//! Extractors whose rejections are problem documents.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::Problem;

/// A JSON body; a malformed one is a 400 problem that never repeats the body's values.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                // serde's messages can quote a value; only "missing field" ones are safe.
                let detail = text
                    .find("missing field")
                    .map(|at| text[at..].split(" at line").next().unwrap_or("").to_owned())
                    .unwrap_or_else(|| "the body is not JSON of the expected shape".into());
                let status = match rejection.status() {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(Problem::new(status, "invalid-body", "Invalid body").with_detail(detail))
            }
        }
    }
}

/// The client's address, the key of per-address rate limits.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let ConnectInfo(addr) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::internal(&anyhow::anyhow!("no peer address on the request")))?;
        Ok(Self(addr.ip()))
    }
}
