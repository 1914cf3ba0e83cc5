//! Extractors whose rejections are problem documents.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::problem::{Problem, catalogue};

/// A JSON object body. Not JSON (by its content type) is 415, too large 413, and anything
/// else that is not an object of the expected shape 400 (serde would take `[a, b]` for a
/// struct's fields in order); the problem never repeats the body's values.
pub struct AppJson<T>(pub T);

/// An optional JSON body: a request with no body (no `Content-Type`, and no length or a
/// length of 0) has none; any other is read as [`AppJson`] reads it.
impl<T: DeserializeOwned, S: Send + Sync> axum::extract::OptionalFromRequest<S> for AppJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Problem> {
        let headers = req.headers();
        let length = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let chunked = headers.contains_key(axum::http::header::TRANSFER_ENCODING);
        if !headers.contains_key(axum::http::header::CONTENT_TYPE)
            && !chunked
            && length.is_none_or(|l| l == "0")
        {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let invalid = |detail: String| Problem::of(catalogue::INVALID_BODY).with_detail(detail);
        if !is_json(req.headers()) {
            return Err(Problem::of(catalogue::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("the body must be JSON, sent as application/json")
                .closing());
        }
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_JSON_BODY) {
            return Err(Problem::of(catalogue::BODY_TOO_LARGE)
                .with_detail("the body is larger than this endpoint accepts")
                .closing());
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(Problem::of(catalogue::BODY_TOO_LARGE)
                    .with_detail("the body is larger than this endpoint accepts")
                    .closing());
            }
            // The body did not arrive within the request timeout (one deadline for the whole
            // body, see `server::with_limits`) or the client went away.
            Err(_) => {
                return Err(Problem::of(catalogue::BODY_TIMEOUT)
                    .with_detail("the body did not arrive in time")
                    .closing());
            }
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // `null` where the body itself is optional (`AppJson<Option<_>>`) means none.
            if bytes.trim_ascii() == b"null"
                && let Ok(value) = serde_json::from_slice::<T>(b"null")
            {
                return Ok(Self(value));
            }
            return Err(invalid("the body must be a JSON object".into()));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => integral(&bytes).map(Self).ok_or_else(|| {
                invalid(
                    safe_detail(&rejection.body_text())
                        .unwrap_or_else(|| "the body is not JSON of the expected shape".into()),
                )
            }),
        }
    }
}

/// The body read again with every number that has no fractional part taken as an integer:
/// JSON Schema counts `2.0` as an integer, so a client may send it where one is expected.
fn integral<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    fn walk(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Within ±2^63 every integral f64 converts exactly.
                if f.fract() == 0.0 && f.abs() < 9.223_372_036_854_775e18 {
                    #[allow(clippy::cast_possible_truncation)]
                    let i = f as i64;
                    *value = serde_json::Value::from(i);
                    return true;
                }
                false
            }
            // Every element is walked (no short circuit): all of them are converted.
            serde_json::Value::Array(items) => {
                items.iter_mut().map(walk).filter(|c| *c).count() > 0
            }
            serde_json::Value::Object(map) => map.values_mut().map(walk).filter(|c| *c).count() > 0,
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !walk(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// The largest JSON body accepted (axum's default body limit).
pub const MAX_JSON_BODY: u64 = 2 * 1024 * 1024;

/// `application/json` or an `application/*+json` type, as axum's `Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The part of a serde message that is safe to show: serde's messages can quote a value, so
/// only its own "missing field `name`" is passed on, and only when the whole message is that
/// (after the extractor's prefix) and the name is one a struct could have: a client's key or
/// value that merely contains the words is never echoed.
fn safe_detail(text: &str) -> Option<String> {
    let message = text.rsplit_once(": ").map_or(text, |(_, m)| m);
    let message = message.split(" at line").next().unwrap_or("");
    let name = message.strip_prefix("missing field `")?.strip_suffix('`')?;
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    plain.then(|| format!("missing field `{name}`"))
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
                Err(Problem::of(catalogue::INVALID_QUERY).with_detail(detail))
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
            Err(_) => {
                Err(Problem::of(catalogue::INVALID_PATH)
                    .with_detail("a path parameter is malformed"))
            }
        }
    }
}

/// Longest `Idempotency-Key` taken.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// An optional `Idempotency-Key` header: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII
/// characters. A retry with the same key lands on the same stream entry, so it is applied
/// once. Anything else is a 400 problem that never repeats the header.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        // An empty header is no header.
        let Some(value) = values.next().filter(|v| !v.is_empty()) else {
            return Ok(Self(None));
        };
        let bytes = value.as_bytes();
        if values.next().is_some()
            || bytes.is_empty()
            || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(Problem::of(catalogue::INVALID_HEADER).with_detail(format!(
                "Idempotency-Key must be one value of 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(Self(Some(String::from_utf8_lossy(bytes).into_owned())))
    }
}

/// An optional `If-Match` header naming a stream version, as a strong ETag such as `"3"`
/// (If-Match compares strongly, so a weak `W/"3"` is refused). Anything else is a 400
/// problem.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut values = parts.headers.get_all(axum::http::header::IF_MATCH).iter();
        // An empty header is no header.
        let Some(value) = values.next().filter(|v| !v.is_empty()) else {
            return Ok(Self(None));
        };
        let version = value
            .to_str()
            .ok()
            .filter(|_| values.next().is_none())
            .and_then(|v| v.trim().strip_prefix('"')?.strip_suffix('"'))
            .filter(|v| (1..=19).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok());
        match version {
            Some(version) => Ok(Self(Some(version))),
            None => Err(Problem::of(catalogue::INVALID_HEADER)
                .with_detail("If-Match must be one version as a quoted number, such as \"3\"")),
        }
    }
}

/// The client's address, the key of per-address rate limits: the TCP peer or, when the peer
/// is one of `TRUSTED_PROXIES`, the nearest address in its `X-Forwarded-For` that is not a
/// trusted proxy (a client cannot pick its budget by sending the header itself). An IPv6
/// address is reduced to its /64 network (one subscriber commonly holds a whole /64, so
/// counting single IPv6 addresses would hand each client 2^64 budgets).
pub struct ClientAddr(pub IpAddr);

/// The client behind `peer`, given the `X-Forwarded-For` values of the request.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Each proxy appends the address it received the request from: read from the right,
    // past our own proxies.
    for hop in forwarded_for.rev().flat_map(|v| v.rsplit(',')) {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer
}

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

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let ConnectInfo(addr) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::internal(&anyhow::anyhow!("no peer address on the request")))?;
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let client = client_address(addr.ip(), forwarded, &state.trusted_proxies);
        Ok(Self(limit_key(client)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serde_s_own_missing_field_message_is_shown() {
        assert_eq!(
            safe_detail("Failed to deserialize query string: missing field `token`").as_deref(),
            Some("missing field `token`")
        );
        assert_eq!(
            safe_detail(
                "Failed to deserialize the JSON body into the target type: missing field \
                 `line1` at line 1 column 2"
            )
            .as_deref(),
            Some("missing field `line1`")
        );
        for echoed in [
            "Failed to deserialize the JSON body into the target type: unknown field \
             `missing field <script>alert(1)</script>`, expected `lines` at line 1 column 9",
            "Failed to deserialize the JSON body into the target type: lines[0].quantity: \
             invalid type: string \"missing field LEAKED\", expected i64 at line 1 column 40",
            "Failed to deserialize query string: unknown field `a: missing field `x``",
            "Failed to deserialize query string: missing field `Token<b>`",
        ] {
            assert_eq!(safe_detail(echoed), None, "{echoed}");
        }
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_forwarded_address_behind_a_trusted_peer() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "192.0.2.1/32"]
            .iter()
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|_| ipnet::IpNet::from(ip("0.0.0.0")))
            })
            .collect();
        let client = |peer: &str, headers: &[&str]| {
            client_address(ip(peer), headers.iter().copied(), &trusted)
        };
        // Not behind a trusted proxy: the header is the client's own word, ignored.
        assert_eq!(client("203.0.113.9", &["198.51.100.1"]), ip("203.0.113.9"));
        // Behind our proxies: the nearest address they did not add themselves.
        assert_eq!(client("10.1.2.3", &["198.51.100.1"]), ip("198.51.100.1"));
        assert_eq!(
            client("10.1.2.3", &["1.2.3.4, 198.51.100.1, 192.0.2.1"]),
            ip("198.51.100.1"),
            "a spoofed leftmost entry is not believed"
        );
        assert_eq!(
            client("10.1.2.3", &["1.2.3.4", "198.51.100.1, 10.9.9.9"]),
            ip("198.51.100.1"),
            "several headers read as one list"
        );
        // No header, or nothing usable in it: the proxy itself.
        assert_eq!(client("10.1.2.3", &[]), ip("10.1.2.3"));
        assert_eq!(client("10.1.2.3", &["garbage"]), ip("10.1.2.3"));
        assert_eq!(client("10.1.2.3", &["10.0.0.7"]), ip("10.1.2.3"));
    }

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
