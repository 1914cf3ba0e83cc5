//! The HTTP server loop: hyper's HTTP/1.1 connection driver with the limits a public shop
//! needs, which `axum::serve` does not expose, and the request limits the router applies.
//!
//! - A connection that has not sent a whole request head within the header timeout is closed:
//!   a new one that sends nothing or half a header (slowloris), and a kept-alive one left idle
//!   between requests.
//! - A body that has not arrived within the request timeout, counted from the request's head
//!   and not from its last byte, is refused (408); a declared length above the limit is 413 at
//!   once. A safe request
//!   (`GET`, `HEAD`, `OPTIONS`) not answered within it gets 503. A request that changes
//!   something is never cut off once its body is in: dropping it half-way could leave a
//!   committed change answered as "try again".
//! - At most a configured number of requests are served at once; one more is refused at once
//!   with 503 and `Retry-After`, instead of queueing without end. Health, readiness and
//!   metrics are never refused, so probes see the process as alive under load.
//! - On shutdown the listener closes, idle connections are closed, and in-flight requests
//!   finish, for at most the request timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use super::problem::Problem;
use super::settings::HttpLimits;

/// How long to wait before accepting again after the listener failed (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Ignored error: a socket that refuses the option still works, only with Nagle.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().call(request.map(Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.request_timeout) => {
            tracing::warn!("connections still open after the grace period; leaving them");
        }
    }
    Ok(())
}

/// The timeouts and the bound on concurrent requests. The router applies them inside its
/// request-id and tracing layers, so their answers carry a request id too.
pub fn with_limits<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limits: HttpLimits,
) -> Router<S> {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let timeout = limits.request_timeout;
    router
        .layer(axum::middleware::map_request(
            move |request: Request| async move {
                request.map(|body| Body::new(Deadline::new(body, timeout)))
            },
        ))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| timed(timeout, request, next),
        ))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| shed(Arc::clone(&permits), request, next),
        ))
}

/// A request body that fails once the request timeout has passed since its head arrived:
/// one deadline for the whole body, not for each chunk, so a body trickled in a byte at a
/// time is refused (408 from the extractor that reads it) instead of holding a slot for as
/// long as it trickles.
struct Deadline {
    inner: Body,
    expires: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Body, within: Duration) -> Self {
        Self {
            inner,
            expires: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl hyper::body::Body for Deadline {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.expires.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(axum::Error::new(
                "the body did not arrive within the request timeout",
            ))));
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Paths that are answered whatever the load: the probes and the metrics.
const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

async fn shed(permits: Arc<Semaphore>, request: Request, next: Next) -> Response {
    if NEVER_SHED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = permits.try_acquire_owned() else {
        metrics::counter!("openrun_http_shed_total").increment(1);
        return Problem::unavailable(
            "the service is at its limit of concurrent requests",
            Duration::from_secs(1),
        )
        .into_response();
    };
    next.run(request).await
}

async fn timed(timeout: Duration, request: Request, next: Next) -> Response {
    if !request.method().is_safe() {
        return next.run(request).await;
    }
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("openrun_http_timeouts_total").increment(1);
            Problem::unavailable("the request took too long", Duration::from_secs(1))
                .into_response()
        }
    }
}
