//! Extractors whose rejections are problem documents.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

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
            Err(rejection) => match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Body too large",
                )
                .with_detail("the body is larger than this endpoint accepts")),
                status => {
                    let status = match status {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    let detail = safe_detail(&rejection.body_text())
                        .unwrap_or_else(|| "the body is not JSON of the expected shape".into());
                    Err(Problem::new(status, "invalid-body", "Invalid body").with_detail(detail))
                }
            },
        }
    }
}

/// The part of a serde message that is safe to show: serde's messages can quote a value, so
/// only "missing field" ones are passed on.
fn safe_detail(text: &str) -> Option<String> {
    text.find("missing field")
        .map(|at| text[at..].split(" at line").next().unwrap_or("").to_owned())
}

/// A query string; a malformed one is a 400 problem that never repeats its values.
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                let detail = safe_detail(&rejection.body_text())
                    .unwrap_or_else(|| "the query string is not of the expected shape".into());
                Err(
                    Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
                        .with_detail(detail),
                )
            }
        }
    }
}

/// Path parameters; a malformed one (for example bad percent-encoding) is a 400 problem.
pub struct AppPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AppPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(_) => Err(
                Problem::new(StatusCode::BAD_REQUEST, "invalid-path", "Invalid path")
                    .with_detail("a path parameter is malformed"),
            ),
        }
    }
}

/// The client's address, the key of per-address rate limits: the TCP peer, with an IPv6
/// peer reduced to its /64 network (one subscriber commonly holds a whole /64, so counting
/// single IPv6 addresses would hand each client 2^64 budgets).
pub struct ClientAddr(pub IpAddr);

/// The rate-limit key of a peer address.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let ConnectInfo(addr) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::internal(&anyhow::anyhow!("no peer address on the request")))?;
        Ok(Self(limit_key(addr.ip())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_share_their_64_network() {
        let key = |s: &str| limit_key(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
