//! The correctness check after a scenario: each product sold exactly min(supply, demand)
//! and never more than its supply, every acknowledged order is in its buyer's order list,
//! and (with `--audit`, beside the shop's database) in the log, with `openrun audit` passing.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use super::api::Api;
use super::load::ProductAnswers;
use super::prepare::{Product, Shop};

/// How long the check waits for the shop's read models to show what was answered.
const SETTLE: Duration = Duration::from_secs(60);

/// One product's units.
#[derive(Debug, Clone, Serialize)]
pub struct ProductCheck {
    pub product_id: String,
    pub supply: i64,
    pub sold: i64,
    pub available: i64,
    /// Units that answered 201, plus those refused sold out: what the buyers asked for.
    pub demand: u64,
    pub placed: u64,
    /// 5xx or unanswered: may be sold or not.
    pub unknown: u64,
    pub ok: bool,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub products: Vec<ProductCheck>,
    /// Acknowledged orders found in their buyers' lists, of how many.
    pub listed: usize,
    pub acknowledged: usize,
    /// The log and `openrun audit`, when `--audit` ran: the audit's failed checks, and the
    /// acknowledged orders the log does not hold.
    pub audit: Option<Audit>,
    pub failures: Vec<String>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub checks: usize,
    pub failed: Vec<String>,
    pub missing_from_log: usize,
}

/// Checks what `answers` (by product) and `placed` (buyer index, order id) say against
/// the shop; `unexpected` answers (any the drill's valid orders should never get) fail it.
pub async fn check(
    api: &Api,
    shop: &Shop,
    products: &[Product],
    answers: &[ProductAnswers],
    placed: &[(usize, String)],
    unexpected: u64,
    audit: bool,
) -> anyhow::Result<Verdict> {
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for (product, answer) in products.iter().zip(answers) {
        let demand = answer.placed + answer.sold_out;
        // With every outcome known, sold is exact; an unknown outcome may have sold or not.
        let least = (answer.placed as i64).min(product.supply);
        let expected = least;
        let deadline = tokio::time::Instant::now() + SETTLE;
        let (sold, available) = loop {
            let (sold, available) = stock(api, shop, product).await?;
            let settled = if answer.unknown == 0 {
                sold == expected
            } else {
                sold >= least
            };
            if settled || tokio::time::Instant::now() > deadline {
                break (sold, available);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // What the buyers were told must be what the shop did: never more acknowledged
        // than supplied; with every outcome known, sold is exactly what was acknowledged, and
        // a sell-out was told only once every unit was sold; an unknown outcome may have sold.
        let placed = answer.placed as i64;
        let mut ok = sold <= product.supply && available >= 0 && placed <= product.supply;
        if answer.unknown == 0 {
            ok &= sold == placed && sold + available == product.supply;
            ok &= answer.sold_out == 0 || placed == product.supply;
        } else {
            ok &= sold >= placed && sold <= placed + answer.unknown as i64;
        }
        if !ok {
            failures.push(format!(
                "product {}: supply {}, sold {sold}, available {available}, {} placed, {} sold out, {} unknown",
                product.product_id, product.supply, answer.placed, answer.sold_out, answer.unknown
            ));
        }
        checked.push(ProductCheck {
            product_id: product.product_id.clone(),
            supply: product.supply,
            sold,
            available,
            demand,
            placed: answer.placed,
            unknown: answer.unknown,
            ok,
        });
    }
    if unexpected > 0 {
        failures.push(format!(
            "{unexpected} answers the drill's valid orders should never get (another 4xx: a 429 \
             means the shop's rate limits are not the drill's; a purchase limit; a 201 without an id)"
        ));
    }
    if answers
        .iter()
        .all(|a| a.placed + a.sold_out + a.unknown == 0)
    {
        failures.push("no order was answered".into());
    }
    let listed = listed(api, shop, placed).await?;
    if listed < placed.len() {
        failures.push(format!(
            "{} of {} acknowledged orders are not in their buyer's order list",
            placed.len() - listed,
            placed.len()
        ));
    }
    let audit = if audit {
        let audit = in_the_log(placed).await?;
        if !audit.failed.is_empty() {
            failures.push(format!("openrun audit: {}", audit.failed.join("; ")));
        }
        if audit.missing_from_log > 0 {
            failures.push(format!(
                "{} acknowledged orders are not placed in the log",
                audit.missing_from_log
            ));
        }
        Some(audit)
    } else {
        None
    };
    Ok(Verdict {
        products: checked,
        listed,
        acknowledged: placed.len(),
        audit,
        passed: failures.is_empty(),
        failures,
    })
}

async fn stock(api: &Api, shop: &Shop, product: &Product) -> anyhow::Result<(i64, i64)> {
    let view = api
        .send(
            Method::GET,
            &format!("/v1/products/{}/stock", product.product_id),
            Some(&shop.seller.access),
            None,
        )
        .await?
        .expect(StatusCode::OK, "reading a product's stock")?;
    let item = view["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|i| i["variant_id"] == product.variant_id.as_str())
        })
        .context("the product's variant in its stock view")?;
    Ok((
        item["sold"].as_i64().unwrap_or(-1),
        item["available"].as_i64().unwrap_or(-1),
    ))
}

/// How many of `placed` their buyers' order lists show (waiting for the lists to catch up).
async fn listed(api: &Api, shop: &Shop, placed: &[(usize, String)]) -> anyhow::Result<usize> {
    let mut by_buyer: HashMap<usize, Vec<&str>> = HashMap::new();
    for (buyer, id) in placed {
        by_buyer.entry(*buyer).or_default().push(id);
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    let found = futures_util::stream::iter(by_buyer)
        .map(|(buyer, ids)| async move {
            loop {
                let found = buyer_lists(api, &shop.buyers[buyer].access, &ids).await?;
                if found == ids.len() || tokio::time::Instant::now() > deadline {
                    return anyhow::Ok(found);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    found.into_iter().try_fold(0, |n, f| Ok(n + f?))
}

async fn buyer_lists(api: &Api, token: &str, ids: &[&str]) -> anyhow::Result<usize> {
    let mut seen = std::collections::HashSet::new();
    for page in 1.. {
        let list = api
            .send(
                Method::GET,
                &format!("/v1/orders?page={page}&size=100"),
                Some(token),
                None,
            )
            .await?
            .expect(StatusCode::OK, "listing a buyer's orders")?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        seen.extend(
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned)),
        );
        if items.len() < 100 {
            break;
        }
    }
    Ok(ids.iter().filter(|id| seen.contains(**id)).count())
}

/// Opens the shop's log with this process's settings (those `openrun serve` runs with),
/// looks up every acknowledged order and runs the audit.
async fn in_the_log(placed: &[(usize, String)]) -> anyhow::Result<Audit> {
    use crate::eventstore::StreamRef;
    let config = crate::config::Config::from_env()?;
    let db = crate::startup::connect(&config).await?;
    let events = crate::eventstore::open(&db, &config.group_commit);
    let result = async {
        let missing = futures_util::stream::iter(placed)
            .map(|(_, id)| {
                let events = &events;
                async move {
                    let stream = StreamRef::new("order", id.as_str());
                    let recorded = crate::ops::stream_events(events.as_ref(), &stream).await?;
                    anyhow::Ok(
                        recorded
                            .first()
                            .is_none_or(|e| e.event_type != "OrderPlaced"),
                    )
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .try_fold(0, |n, missing| anyhow::Ok(n + usize::from(missing?)))?;
        let stock = crate::startup::shared_stock_store(&config).await?;
        let checks = crate::ops::audit(
            &db,
            events.as_ref(),
            stock.as_deref(),
            config.orders.refund_settle_within,
        )
        .await?;
        anyhow::Ok(Audit {
            checks: checks.len(),
            failed: checks
                .iter()
                .filter(|c| !c.violations.is_empty())
                .map(|c| format!("{} ({})", c.name, c.violations.len()))
                .collect(),
            missing_from_log: missing,
        })
    }
    .await;
    events.shutdown().await;
    db.close().await;
    result
}

/// Fails at once when `--audit` could not read the shop's log (rather than after the load).
pub async fn log_reachable() -> anyhow::Result<()> {
    let config = crate::config::Config::from_env()?;
    let db = crate::startup::connect(&config).await?;
    let events = crate::eventstore::open(&db, &config.group_commit);
    let head = events.head_position().await;
    events.shutdown().await;
    db.close().await;
    head.map(drop)
        .map_err(|e| anyhow::anyhow!("reading the log: {e}"))
}
