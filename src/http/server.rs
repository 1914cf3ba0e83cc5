//! The HTTP server loop: hyper's HTTP/1.1 connection driver with the limits a public shop
//! needs, which `axum::serve` does not expose.
//!
//! - A connection that has not sent a whole request head within the header timeout is closed:
//!   a new one that sends nothing or half a header (slowloris), and a kept-alive one left idle
//!   between requests.
//! - A request not answered within the request timeout (reading its body included) gets 503.
//! - At most a configured number of requests are served at once; one more is refused at once
//!   with 503 and `Retry-After`, instead of queueing without end.
//! - On shutdown the listener closes, idle connections are closed, and in-flight requests
//!   finish.

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
use crate::config::HttpLimits;

/// How long to wait before accepting again after the listener failed (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = with_limits(router, limits);
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
    graceful.shutdown().await;
    Ok(())
}

/// The request timeout and the bound on concurrent requests, outermost first.
fn with_limits(router: Router, limits: HttpLimits) -> Router {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let timeout = limits.request_timeout;
    router
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| timed(timeout, request, next),
        ))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| shed(Arc::clone(&permits), request, next),
        ))
}

async fn shed(permits: Arc<Semaphore>, request: Request, next: Next) -> Response {
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
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("openrun_http_timeouts_total").increment(1);
            Problem::unavailable("the request took too long", Duration::from_secs(1))
                .into_response()
        }
    }
}
