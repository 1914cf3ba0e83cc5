//! The load of the three scenarios and what it records: each answer's outcome and latency,
//! in total and per second of the run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::api::Api;
use super::prepare::{Member, Product};

/// What an answer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 201 for an order, 200 for `/healthz`.
    Success,
    /// 409 sold out.
    SoldOut,
    /// 409 purchase limit.
    Limit,
    /// Any other 4xx.
    OtherClient,
    /// Any 5xx: for an order, its outcome is unknown to the buyer.
    Server,
    /// No answer: the connection failed or timed out (outcome unknown too).
    Transport,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::SoldOut,
        Outcome::Limit,
        Outcome::OtherClient,
        Outcome::Server,
        Outcome::Transport,
    ];

    /// An error of the rate scenario's search: anything but a placed order or a sell-out.
    pub fn is_error(self) -> bool {
        !matches!(self, Outcome::Success | Outcome::SoldOut)
    }
}

/// Answers by outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts(pub BTreeMap<Outcome, u64>);

impl Counts {
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0.get(&outcome).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn errors(&self) -> u64 {
        self.0
            .iter()
            .filter(|(o, _)| o.is_error())
            .map(|(_, n)| n)
            .sum()
    }
}

/// The answers of one product: what the correctness check compares with its stock.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProductAnswers {
    pub placed: u64,
    pub sold_out: u64,
    /// 5xx and transport errors: placed or not, the buyer cannot tell.
    pub unknown: u64,
}

/// One slice of a run (a second, or less for a burst), by completion time.
pub struct Second {
    pub counts: Counts,
    pub latency: Histogram<u64>,
}

/// Latencies in microseconds, up to a minute.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant bounds, valid
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// Everything one phase of a scenario recorded.
pub struct Recorded {
    pub started: Instant,
    /// The width of each of `seconds`.
    pub bucket: Duration,
    pub counts: Counts,
    pub latency: Histogram<u64>,
    pub seconds: Vec<Second>,
    pub products: Vec<ProductAnswers>,
    /// `(buyer index, order id)` of every 201.
    pub placed: Vec<(usize, String)>,
    /// Answers a valid drill order should never get: another 4xx, a purchase limit (the
    /// drill's products have none), a 201 without an order id.
    pub unexpected: u64,
    /// Unexpected answers by `status type`, for the report.
    pub other: BTreeMap<String, u64>,
    /// When the last answer came.
    pub last: Option<Instant>,
}

/// The recorder one phase's requests share.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    pub fn new(started: Instant, products: usize, bucket: Duration) -> Self {
        Self(Arc::new(Mutex::new(Recorded {
            started,
            bucket,
            counts: Counts::default(),
            latency: histogram(),
            seconds: Vec::new(),
            products: vec![ProductAnswers::default(); products],
            placed: Vec::new(),
            unexpected: 0,
            other: BTreeMap::new(),
            last: None,
        })))
    }

    /// Records one answer that took `latency` (from its intended send time).
    pub fn record(&self, answer: &Answered, latency: Duration) {
        let now = Instant::now();
        #[allow(clippy::unwrap_used)] // poisoned only by a panic while recording
        let mut r = self.0.lock().unwrap();
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = r.latency.record(micros);
        *r.counts.0.entry(answer.outcome).or_default() += 1;
        let second = (now.saturating_duration_since(r.started).as_micros()
            / r.bucket.as_micros().max(1)) as usize;
        while r.seconds.len() <= second {
            r.seconds.push(Second {
                counts: Counts::default(),
                latency: histogram(),
            });
        }
        let s = &mut r.seconds[second];
        *s.counts.0.entry(answer.outcome).or_default() += 1;
        let _ = s.latency.record(micros);
        if let Some(p) = answer.product {
            let product = &mut r.products[p];
            match answer.outcome {
                Outcome::Success => product.placed += 1,
                Outcome::SoldOut => product.sold_out += 1,
                Outcome::Server | Outcome::Transport => product.unknown += 1,
                Outcome::Limit | Outcome::OtherClient => {}
            }
        }
        if let (Some(buyer), Some(id)) = (answer.buyer, &answer.order_id) {
            r.placed.push((buyer, id.clone()));
        }
        let unreadable = answer.outcome == Outcome::Success
            && answer.buyer.is_some()
            && answer.order_id.is_none();
        if unreadable || matches!(answer.outcome, Outcome::Limit | Outcome::OtherClient) {
            r.unexpected += 1;
        }
        if let Some(other) = &answer.other {
            *r.other.entry(other.clone()).or_default() += 1;
        }
        r.last = Some(r.last.map_or(now, |last| last.max(now)));
    }

    /// What was recorded, once every request is done.
    pub fn finish(self) -> Recorded {
        match Arc::try_unwrap(self.0) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(shared) => {
                #[allow(clippy::unwrap_used)] // poisoned only by a panic while recording
                let r = shared.lock().unwrap();
                Recorded {
                    started: r.started,
                    bucket: r.bucket,
                    counts: r.counts.clone(),
                    latency: r.latency.clone(),
                    seconds: r
                        .seconds
                        .iter()
                        .map(|s| Second {
                            counts: s.counts.clone(),
                            latency: s.latency.clone(),
                        })
                        .collect(),
                    products: r.products.clone(),
                    placed: r.placed.clone(),
                    unexpected: r.unexpected,
                    other: r.other.clone(),
                    last: r.last,
                }
            }
        }
    }
}

/// One answer, classified.
pub struct Answered {
    pub outcome: Outcome,
    pub product: Option<usize>,
    pub buyer: Option<usize>,
    pub order_id: Option<String>,
    /// `status type` of an unexpected answer.
    pub other: Option<String>,
}

#[derive(Deserialize)]
struct Placed {
    id: String,
}

#[derive(Deserialize)]
struct ProblemType {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A ready-made order request of one buyer for one product.
pub struct OrderRequest {
    pub buyer: usize,
    pub product: usize,
    pub key: String,
    pub body: String,
    pub token: String,
}

impl OrderRequest {
    /// One unit of `product` for `member`, with a key of its own.
    pub fn new(buyer: usize, member: &Member, product: usize, item: &Product, key: String) -> Self {
        let body = format!(
            r#"{{"lines":[{{"product_id":"{}","variant_id":"{}","quantity":1}}],"address_id":"{}","payment":{{"method":"sandbox","token":"tok_visa"}}}}"#,
            item.product_id, item.variant_id, member.address_id
        );
        Self {
            buyer,
            product,
            key,
            body,
            token: format!("Bearer {}", member.access),
        }
    }

    /// Sends it and classifies the answer.
    pub async fn send(self, api: &Api) -> Answered {
        let sent = api
            .request(Method::POST, "/v1/orders")
            .header("authorization", self.token)
            .header("idempotency-key", self.key)
            .header("content-type", "application/json")
            .body(self.body)
            .send()
            .await;
        let mut answered = Answered {
            outcome: Outcome::Transport,
            product: Some(self.product),
            buyer: Some(self.buyer),
            order_id: None,
            other: None,
        };
        let Ok(response) = sent else {
            answered.other = Some("transport error".into());
            return answered;
        };
        let status = response.status();
        let Ok(bytes) = response.bytes().await else {
            answered.other = Some(format!("{} body lost", status.as_u16()));
            return answered;
        };
        if status == StatusCode::CREATED {
            answered.outcome = Outcome::Success;
            answered.order_id = serde_json::from_slice::<Placed>(&bytes).ok().map(|p| p.id);
            return answered;
        }
        let kind = serde_json::from_slice::<ProblemType>(&bytes)
            .ok()
            .and_then(|p| p.kind)
            .unwrap_or_default();
        answered.outcome = match (status, kind.as_str()) {
            (StatusCode::CONFLICT, "/problems/sold-out") => Outcome::SoldOut,
            (StatusCode::CONFLICT, "/problems/purchase-limit") => Outcome::Limit,
            (s, _) if s.is_server_error() => Outcome::Server,
            _ => Outcome::OtherClient,
        };
        if answered.outcome.is_error() {
            answered.other = Some(format!("{} {kind}", status.as_u16()));
        }
        answered
    }
}

/// `GET /healthz`, classified like an order (200 is a success).
pub async fn health(api: &Api) -> Answered {
    let outcome = match api.request(Method::GET, "/healthz").send().await {
        Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Transport,
        },
        Ok(r) if r.status().is_server_error() => Outcome::Server,
        Ok(_) => Outcome::OtherClient,
        Err(_) => Outcome::Transport,
    };
    Answered {
        outcome,
        product: None,
        buyer: None,
        order_id: None,
        other: outcome.is_error().then(|| format!("healthz {outcome:?}")),
    }
}

/// Opens up to `connections` connections at once (each a `/healthz`), so that a burst
/// measures orders, not TCP handshakes; how many failed.
pub async fn warm_up(api: &Api, connections: usize) -> usize {
    let answers = futures_util::future::join_all((0..connections).map(|_| health(api))).await;
    answers
        .iter()
        .filter(|a| a.outcome != Outcome::Success)
        .count()
}

/// Every request sent at `at` at once; returns when the last is answered.
pub async fn burst(
    api: &Api,
    requests: Vec<OrderRequest>,
    at: Instant,
    products: usize,
) -> Recorded {
    let recorder = Recorder::new(at, products, Duration::from_millis(50));
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        let (api, recorder) = (api.clone(), recorder.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            let answered = request.send(&api).await;
            recorder.record(&answered, at.elapsed());
        });
    }
    while tasks.join_next().await.is_some() {}
    recorder.finish()
}

/// An open loop: `make(i)` sent at `start + i / rps` for `duration`, whatever the answers'
/// pace, at most `connections` at once; each latency runs from its intended send time.
pub async fn open_loop(
    api: &Api,
    rps: u32,
    duration: Duration,
    connections: usize,
    products: usize,
    make: impl Fn(u64) -> OrderRequest,
    progress: &indicatif::ProgressBar,
) -> Recorded {
    let start = Instant::now() + Duration::from_millis(50);
    let recorder = Recorder::new(start, products, Duration::from_secs(1));
    let permits = Arc::new(tokio::sync::Semaphore::new(connections));
    let total = (f64::from(rps) * duration.as_secs_f64()).round() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / f64::from(rps));
        tokio::time::sleep_until(intended).await;
        let request = make(i);
        let (api, recorder, permits) = (api.clone(), recorder.clone(), Arc::clone(&permits));
        let progress = progress.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let answered = request.send(&api).await;
            recorder.record(&answered, intended.elapsed());
            progress.inc(1);
        });
        // Reap finished tasks as we go, so a long run holds only those in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    recorder.finish()
}

/// A closed loop: `workers` clients, each sending `next(worker, n)` again as soon as its
/// previous request is answered, until `duration` has passed.
pub async fn closed_loop<F>(
    workers: usize,
    duration: Duration,
    products: usize,
    next: F,
    progress: &indicatif::ProgressBar,
) -> Recorded
where
    F: Fn(usize, u64) -> futures_util::future::BoxFuture<'static, Answered> + Send + Sync + 'static,
{
    let start = Instant::now();
    let end = start + duration;
    let recorder = Recorder::new(start, products, Duration::from_secs(1));
    let next = Arc::new(next);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (recorder, next, progress) = (recorder.clone(), Arc::clone(&next), progress.clone());
        tasks.spawn(async move {
            let mut n = 0;
            while Instant::now() < end {
                let sent = Instant::now();
                let answered = next(worker, n).await;
                recorder.record(&answered, sent.elapsed());
                progress.inc(1);
                n += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    recorder.finish()
}
