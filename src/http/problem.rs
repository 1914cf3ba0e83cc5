//! Errors at the HTTP edge as RFC 9457 `application/problem+json`, each with a stable `type`.
//!
//! Every problem type the API answers, with its status and title, is a constant of
//! [`catalogue`]: capability errors map into these, and a test checks that no two share a
//! `type`. A 5xx cause is logged once, where its problem is made ([`Problem::internal`]), and
//! never shown.

/// One kind of problem: its `type` (`/problems/{slug}`), status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType {
    /// The HTTP status.
    pub status: StatusCode,
    /// The last part of the `type`.
    pub slug: &'static str,
    /// The short summary.
    pub title: &'static str,
}

/// Every problem type of the API.
pub mod catalogue {
    use axum::http::StatusCode;

    use super::ProblemType;

    macro_rules! types {
        ($($name:ident = $status:ident, $slug:literal, $title:literal;)*) => {
            $(
                #[doc = concat!("`/problems/", $slug, "`: ", $title, ".")]
                pub const $name: ProblemType =
                    ProblemType { status: StatusCode::$status, slug: $slug, title: $title };
            )*
            /// All of them.
            pub const ALL: &[ProblemType] = &[$($name),*];
        };
    }

    types! {
        INVALID_BODY = BAD_REQUEST, "invalid-body", "Invalid body";
        INVALID_QUERY = BAD_REQUEST, "invalid-query", "Invalid query";
        INVALID_PATH = BAD_REQUEST, "invalid-path", "Invalid path";
        INVALID_HEADER = BAD_REQUEST, "invalid-header", "Invalid header";
        INVALID_CURSOR = BAD_REQUEST, "invalid-cursor", "Invalid cursor";
        UNAUTHORIZED = UNAUTHORIZED, "unauthorized", "Unauthorized";
        INVALID_CREDENTIALS = UNAUTHORIZED, "invalid-credentials", "Invalid credentials";
        INVALID_TOKEN = UNAUTHORIZED, "invalid-token", "Invalid token";
        FORBIDDEN = FORBIDDEN, "forbidden", "Forbidden";
        NOT_FOUND = NOT_FOUND, "not-found", "Not found";
        VERIFICATION_LINK_UNKNOWN = NOT_FOUND, "verification-link-unknown", "Unknown link";
        METHOD_NOT_ALLOWED = METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed";
        BODY_TIMEOUT = REQUEST_TIMEOUT, "body-timeout", "Body not received";
        DUPLICATE = CONFLICT, "duplicate", "Already registered";
        ADDRESS_LIMIT = CONFLICT, "address-limit", "Too many addresses";
        ROLE_NOT_RAISED = CONFLICT, "role-not-raised", "Role not raised";
        ALREADY_VERIFIED = CONFLICT, "already-verified", "Already verified";
        CATEGORY_ARCHIVED = CONFLICT, "category-archived", "Category archived";
        CATEGORY_IN_USE = CONFLICT, "category-in-use", "Category in use";
        PRODUCT_DELETED = CONFLICT, "product-deleted", "Product deleted";
        TRANSITION_NOT_ALLOWED = CONFLICT, "transition-not-allowed", "Transition not allowed";
        SCHEDULE_REFUSED = CONFLICT, "schedule-refused", "Schedule refused";
        SCHEDULE_CLOSED = CONFLICT, "schedule-closed", "Schedule no longer pending";
        FROZEN = CONFLICT, "frozen", "Frozen before a drop";
        VARIANT_CONFLICT = CONFLICT, "variant-conflict", "Variant cannot change";
        SUPPLY_CONFLICT = CONFLICT, "supply-conflict", "Supply cannot change";
        CONFLICT = CONFLICT, "conflict", "Changed concurrently";
        SELLER_SUSPENDED = FORBIDDEN, "seller-suspended", "Seller suspended";
        WISHLIST_FULL = CONFLICT, "wishlist-full", "Wishlist full";
        CART_FULL = CONFLICT, "cart-full", "Cart full";
        PRECONDITION_FAILED = PRECONDITION_FAILED, "precondition-failed", "Version mismatch";
        PRECONDITION_REQUIRED = PRECONDITION_REQUIRED, "precondition-required", "If-Match or Idempotency-Key required";
        VERIFICATION_LINK_USED = GONE, "verification-link-used", "Link already used";
        VERIFICATION_LINK_EXPIRED = GONE, "verification-link-expired", "Link expired";
        BODY_TOO_LARGE = PAYLOAD_TOO_LARGE, "body-too-large", "Body too large";
        UNSUPPORTED_MEDIA_TYPE = UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Not JSON";
        VALIDATION = UNPROCESSABLE_ENTITY, "validation", "Invalid input";
        IDEMPOTENCY_KEY_REUSED = UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency key reused";
        RATE_LIMITED = TOO_MANY_REQUESTS, "rate-limited", "Too many requests";
        INTERNAL = INTERNAL_SERVER_ERROR, "internal", "Internal error";
        OUTCOME_UNKNOWN = INTERNAL_SERVER_ERROR, "outcome-unknown", "Outcome unknown";
        SOLD_OUT = CONFLICT, "sold-out", "Sold out";
        NOT_ON_SALE = CONFLICT, "not-on-sale", "Not on sale";
        PURCHASE_LIMIT = CONFLICT, "purchase-limit", "Purchase limit reached";
        ORDER_IN_FLIGHT = CONFLICT, "order-in-flight", "Order being placed";
        ORDER_CLOSED = CONFLICT, "order-closed", "Order closed without being placed";
        ORDER_STATUS = CONFLICT, "order-status", "Not possible in the order's status";
        ORDER_WINDOW_CLOSED = CONFLICT, "order-window-closed", "Window closed";
        IDEMPOTENCY_KEY_REQUIRED = BAD_REQUEST, "idempotency-key-required", "Idempotency-Key required";
        PAYMENT_DECLINED = PAYMENT_REQUIRED, "payment-declined", "Payment declined";
        PAYMENT_GATEWAY = BAD_GATEWAY, "payment-gateway", "Payment gateway failed";
        RECORDED = SERVICE_UNAVAILABLE, "recorded", "Recorded, not readable yet";
        UNAVAILABLE = SERVICE_UNAVAILABLE, "unavailable", "Service unavailable";
        NOT_READY = SERVICE_UNAVAILABLE, "not-ready", "Not ready";
    }
}

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of error, for example `/problems/sold-out`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human-readable summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields at fault, for validation and conflict problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::members::FieldError>,
    /// For `sold-out`: each line short of units, with the units still available (boxed:
    /// rare, and every handler's error carries the field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sold_out: Option<Box<Vec<SoldOutLine>>>,
    /// Seconds until a rate-limited request may be retried (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// Answered before the request's body was read: the connection closes after the answer
    /// (`Connection: close`), so no client sends its next request after an unread body.
    #[serde(skip)]
    pub close: bool,
}

impl Problem {
    /// A problem of one of the [`catalogue`]'s types.
    pub fn of(kind: ProblemType) -> Self {
        Self {
            kind: format!("/problems/{}", kind.slug),
            title: kind.title.to_owned(),
            status: kind.status.as_u16(),
            detail: None,
            errors: Vec::new(),
            sold_out: None,
            retry_after: None,
            close: false,
        }
    }

    /// Adds the fields at fault.
    pub fn with_errors(mut self, errors: Vec<crate::members::FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// 401: no valid identity.
    pub fn unauthorized() -> Self {
        Self::of(catalogue::UNAUTHORIZED).with_detail("a valid access token is required")
    }

    /// 403: the caller may not do this.
    pub fn forbidden(detail: &str) -> Self {
        Self::of(catalogue::FORBIDDEN).with_detail(detail)
    }

    /// 422: the body breaks field rules.
    pub fn invalid(errors: Vec<crate::members::FieldError>) -> Self {
        Self::of(catalogue::VALIDATION).with_errors(errors)
    }

    /// 429 with `Retry-After`, in whole seconds rounded up: a client that waits exactly
    /// that long is let through.
    pub fn too_many(retry_after: std::time::Duration) -> Self {
        let mut p = Self::of(catalogue::RATE_LIMITED);
        p.retry_after = Some(whole_seconds_up(retry_after));
        p
    }

    /// 503 with `Retry-After`: the service is busy or the request took too long.
    pub fn unavailable(detail: &str, retry_after: std::time::Duration) -> Self {
        let mut p = Self::of(catalogue::UNAVAILABLE).with_detail(detail);
        p.retry_after = Some(whole_seconds_up(retry_after));
        p
    }

    /// 500: the cause is logged here, once, and never shown.
    pub fn internal(cause: &anyhow::Error) -> Self {
        tracing::error!(error = format!("{cause:#}"), "internal error");
        Self::of(catalogue::INTERNAL)
    }

    /// Closes the connection after this answer (the request's body was not read).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Adds the case-specific explanation.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// 404 for a path that names nothing.
    pub fn not_found() -> Self {
        Self::of(catalogue::NOT_FOUND)
    }
}

/// A line of an order that is short of units.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SoldOutLine {
    /// The product.
    pub product_id: uuid::Uuid,
    /// The variant.
    pub variant_id: uuid::Uuid,
    /// Units still available (0 when sold out).
    pub available: i64,
}

/// `d` in whole seconds, rounded up, at least 1.
fn whole_seconds_up(d: std::time::Duration) -> u32 {
    let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_problem_type_is_one_kind_with_one_status() {
        let mut slugs: Vec<&str> = catalogue::ALL.iter().map(|t| t.slug).collect();
        slugs.sort_unstable();
        let before = slugs.len();
        slugs.dedup();
        assert_eq!(slugs.len(), before, "two problem types share a slug");
        for t in catalogue::ALL {
            let p = Problem::of(*t);
            assert_eq!(p.status, t.status.as_u16());
            assert!(t.slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        }
    }

    #[test]
    fn retry_after_is_rounded_up() {
        let secs = |d| Problem::too_many(d).retry_after;
        assert_eq!(secs(Duration::from_millis(1)), Some(1));
        assert_eq!(secs(Duration::from_secs(1)), Some(1));
        assert_eq!(secs(Duration::from_millis(1001)), Some(2));
        assert_eq!(secs(Duration::from_millis(29_999)), Some(30));
        assert_eq!(secs(Duration::ZERO), Some(1));
    }
}
