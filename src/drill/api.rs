//! The drill's HTTP client: one connection pool for every buyer, JSON in and out.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A client of one shop.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: reqwest::Url,
}

/// An answer: its status and its body (`Null` when it had none or was not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The problem type's slug (`sold-out` of `/problems/sold-out`), if the body is a problem.
    pub fn problem(&self) -> Option<&str> {
        self.body["type"].as_str()?.strip_prefix("/problems/")
    }

    /// The answer when it has `status`, else an error naming what was sent and what came back.
    pub fn expect(self, status: StatusCode, what: &str) -> anyhow::Result<Value> {
        if self.status == status {
            return Ok(self.body);
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            bail!(
                "{what}: 429 {}: the shop's rate limits are set for real buyers; start it for the \
                 drill with SIGNUPS_PER_ADDRESS_PER_HOUR, LOGIN_PER_ADDRESS_PER_MINUTE, \
                 ORDERS_PER_MEMBER_PER_MINUTE and ORDERS_PER_ADDRESS_PER_MINUTE raised (README, \
                 \"The drill\")",
                self.body["detail"].as_str().unwrap_or("rate limited")
            );
        }
        bail!(
            "{what}: expected {status}, got {}: {}",
            self.status,
            self.body
        )
    }
}

impl Api {
    /// A client of `base` that keeps up to `connections` connections open.
    pub fn new(base: reqwest::Url, connections: usize) -> anyhow::Result<Self> {
        if base.scheme() != "http" {
            bail!(
                "--url: only http:// (run the drill next to the instance, or against the plain listener behind its proxy)"
            );
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base })
    }

    /// The request builder of `path` on the shop.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        self.http.request(method, url)
    }

    /// Sends `method path` with an optional bearer token and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.request(method.clone(), path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        Ok(read(response).await)
    }
}

/// The status and JSON body of `response` (`Null` when the body is not JSON).
pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}
