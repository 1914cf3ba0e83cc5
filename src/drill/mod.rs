//! `openrun drill`: the load rehearsal of a drop against a running instance.
//!
//! It prepares a seller, products and signed-in buyers through the public API ([`prepare`],
//! not timed), then runs one scenario ([`load`]):
//! - `burst`: every buyer sends one order at the instant a scheduled drop opens;
//! - `rate`: an open loop at a fixed arrival rate, latency from each intended send time
//!   (`--find-max` searches the highest rate whose p99 stays within 100 ms, error-free);
//! - `saturate`: a closed loop of every buyer, beside `/healthz` loaded the same way.
//!
//! Each prints its figures and outcomes, the machine's CPU (the drill's own share, so that
//! a client-bound run says so) and the correctness check ([`check`]), and writes a JSON
//! report and an SVG chart ([`report`]).

pub mod api;
pub mod check;
pub mod load;
pub mod prepare;
pub mod report;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DurationRound, Utc};
use futures_util::FutureExt;
use serde::Serialize;

use self::api::Api;
use self::load::{OrderRequest, ProductAnswers, Recorded};
use self::prepare::{Opening, Product, Shop};
use self::report::{Cpu, CpuSample, Memory, Phase, RssPeak};

/// The latency bound of the rate search.
const P99_BOUND_MS: f64 = 100.0;
/// Units per product when `--stock` is not given and the demand has no bound known ahead.
const AMPLE: i64 = 100_000_000;
/// Sessions older than this are refreshed before a timed phase (access tokens last 15 min).
const FRESH: Duration = Duration::from_secs(300);

/// `openrun drill ...`.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The shop's base URL (http).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub url: reqwest::Url,
    /// Buyers, each signed in, each with one connection at most.
    #[arg(long, global = true, default_value_t = 5000)]
    pub buyers: usize,
    /// Products of the drop (one size each); buyer `i` orders product `i % products`.
    #[arg(long, global = true, default_value_t = 4)]
    pub products: usize,
    /// Units of each product; without it, enough for every order the scenario sends.
    #[arg(long, global = true)]
    pub stock: Option<i64>,
    /// Where the report, the chart and the kept members (`buyers.json`) go.
    #[arg(long, global = true, default_value = "drill")]
    pub out: PathBuf,
    /// The login id of an admin of the shop (its password in OPENRUN_ADMIN_PASSWORD, or
    /// asked on a terminal): it makes the drill's category and verifies its members.
    #[arg(
        long,
        global = true,
        env = "OPENRUN_DRILL_ADMIN",
        default_value = "admin"
    )]
    pub admin: String,
    /// The server's process id, on this machine: its CPU and resident memory are reported.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Also open the shop's database (with the settings `openrun serve` reads) to find every
    /// acknowledged order in the log and run `openrun audit`.
    #[arg(long, global = true)]
    pub audit: bool,
    /// How long the server idles before its settled memory is read (with --server-pid).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub settle: Duration,
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The three scenarios.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// Every buyer sends one order at the instant a scheduled drop opens.
    Burst,
    /// An open loop at a fixed arrival rate; latency from each intended send time.
    Rate {
        /// Orders per second (the first rate tried with --find-max).
        #[arg(long, default_value_t = 1000)]
        rps: u32,
        /// How long each rate runs.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Search the highest rate with p99 at most 100 ms and no error.
        #[arg(long)]
        find_max: bool,
    },
    /// A closed loop: every buyer orders again as soon as answered; `/healthz` the same way.
    Saturate {
        /// How long each of the two loads runs.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
    },
}

/// `30s`, `500ms`, `2m` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: the unit is ms, s or m")),
    };
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!("{s:?}: 1 ms to 24 h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A fresh tag: six lowercase letters and digits.
pub fn tag() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A progress bar on the terminal (hidden without one).
pub fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg}: {pos}/{len} {per_sec} [{elapsed}]",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    run: String,
    url: String,
    started_at: chrono::DateTime<Utc>,
    buyers: usize,
    products: Vec<Product>,
    prepare_seconds: f64,
    phases: Vec<Phase>,
    cpu: Vec<(String, Cpu)>,
    /// Saturate: orders/s divided by `/healthz` requests/s.
    orders_per_healthz: Option<f64>,
    /// Rate with --find-max: the highest rate that kept p99 within 100 ms, error-free.
    max_rate: Option<u32>,
    memory: Memory,
    check: check::Verdict,
}

/// Runs the drill; fails when the correctness check does.
pub async fn run(args: DrillArgs, admin_password: &str) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&args.buyers) || !(1..=1_000).contains(&args.products) {
        bail!("--buyers: 1 to 100000; --products: 1 to 1000");
    }
    if let Scenario::Rate { rps: 0, .. } = args.scenario {
        bail!("--rps: at least 1");
    }
    if args.audit {
        check::log_reachable()
            .await
            .context("--audit opens the shop's database with the settings `openrun serve` reads")?;
    }
    if args.stock.is_some_and(|s| s < 1) {
        bail!("--stock: at least 1");
    }
    let started_at = Utc::now();
    let api = Api::new(args.url.clone(), args.buyers)?;
    let kept = args.out.join("buyers.json");
    let prepared = std::time::Instant::now();
    let mut shop = prepare::shop(&api, &args.admin, admin_password, args.buyers, &kept).await?;
    let prepare_seconds = prepared.elapsed().as_secs_f64();
    let mut memory = Memory {
        after_sign_in_mb: report::rss_mb(args.server_pid),
        ..Memory::default()
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "drill {}: {} buyers signed in in {prepare_seconds:.1} s",
        shop.run, args.buyers
    )?;
    drop(out);
    let (name, scenario) = match args.scenario.clone() {
        Scenario::Burst => ("burst", burst(&api, &mut shop, &args).await?),
        Scenario::Rate {
            rps,
            duration,
            find_max,
        } => (
            "rate",
            rate(&api, &mut shop, &args, rps, duration, find_max).await?,
        ),
        Scenario::Saturate { duration } => (
            "saturate",
            saturate(&api, &mut shop, &args, duration).await?,
        ),
    };
    memory.peak_of_orders_mb = scenario.peak_mb;
    shop.keep(&api, &kept)?;
    let verdict = check::check(
        &api,
        &shop,
        &scenario.products,
        &scenario.answers,
        &scenario.placed,
        scenario.unexpected,
        args.audit,
    )
    .await?;
    if args.server_pid.is_some() {
        tokio::time::sleep(args.settle).await;
        memory.settled_mb = report::rss_mb(args.server_pid);
    }
    let report = Report {
        scenario: name,
        run: shop.run.clone(),
        url: args.url.origin().ascii_serialization(),
        started_at,
        buyers: args.buyers,
        products: scenario.products,
        prepare_seconds,
        phases: scenario.phases,
        cpu: scenario.cpu,
        orders_per_healthz: scenario.ratio,
        max_rate: scenario.max_rate,
        memory,
        check: verdict,
    };
    let mut out = std::io::stdout().lock();
    if let Some(ratio) = report.orders_per_healthz {
        writeln!(out, "orders/s divided by healthz requests/s: {ratio:.3}")?;
    }
    if let Some(rate) = report.max_rate {
        writeln!(
            out,
            "highest rate with p99 <= {P99_BOUND_MS} ms and no error: {rate} orders/s"
        )?;
    }
    let m = &report.memory;
    let mb = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} MB"));
    if args.server_pid.is_some() {
        writeln!(
            out,
            "server memory: after sign-in {}, peak of the orders {}, settled {}",
            mb(m.after_sign_in_mb),
            mb(m.peak_of_orders_mb),
            mb(m.settled_mb)
        )?;
    }
    let v = &report.check;
    for p in &v.products {
        writeln!(
            out,
            "  product {}: supply {}, sold {}, demand {}, placed {}{}",
            p.product_id,
            p.supply,
            p.sold,
            p.demand,
            p.placed,
            if p.ok { "" } else { "  WRONG" }
        )?;
    }
    writeln!(
        out,
        "check: {}: sold = min(supply, demand) for every product, none oversold; {} of {} acknowledged orders in their buyers' lists{}",
        if v.passed { "passed" } else { "FAILED" },
        v.listed,
        v.acknowledged,
        v.audit.as_ref().map_or(String::new(), |a| format!(
            "; {} missing from the log; audit: {} checks, {} failed",
            a.missing_from_log,
            a.checks,
            a.failed.len()
        ))
    )?;
    report::write(&args.out, name, &report, &report.phases)?;
    writeln!(
        out,
        "report: {}, chart: {}",
        args.out.join(format!("{name}.json")).display(),
        args.out.join(format!("{name}.svg")).display()
    )?;
    if !v.passed {
        bail!("the correctness check failed: {}", v.failures.join("; "));
    }
    Ok(())
}

/// What a scenario hands to the check and the report.
struct Ran {
    products: Vec<Product>,
    phases: Vec<Phase>,
    cpu: Vec<(String, Cpu)>,
    answers: Vec<ProductAnswers>,
    placed: Vec<(usize, String)>,
    unexpected: u64,
    ratio: Option<f64>,
    max_rate: Option<u32>,
    peak_mb: Option<f64>,
}

impl Ran {
    fn new(products: Vec<Product>) -> Self {
        Self {
            answers: vec![ProductAnswers::default(); products.len()],
            products,
            phases: Vec::new(),
            cpu: Vec::new(),
            placed: Vec::new(),
            unexpected: 0,
            ratio: None,
            max_rate: None,
            peak_mb: None,
        }
    }

    /// Adds one phase of orders: its figures, and its answers for the check.
    fn orders(&mut self, name: String, recorded: Recorded, cpu: Cpu) -> anyhow::Result<&Phase> {
        let phase = Phase::of(name.clone(), &recorded);
        print_phase(&phase, &cpu)?;
        for (all, these) in self.answers.iter_mut().zip(&recorded.products) {
            all.placed += these.placed;
            all.sold_out += these.sold_out;
            all.unknown += these.unknown;
        }
        self.placed.extend(recorded.placed);
        self.unexpected += recorded.unexpected;
        self.cpu.push((name, cpu));
        self.phases.push(phase);
        self.phases.last().context("a phase")
    }

    fn peak(&mut self, peak: Option<f64>) {
        self.peak_mb = match (self.peak_mb, peak) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

fn print_phase(phase: &Phase, cpu: &Cpu) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    phase.print(&mut out)?;
    cpu.print(&mut out)
}

/// The ready-made order of request `i` of a scenario: buyer `i % buyers`, product
/// `i % products`, a key of its own.
fn request(shop: &Shop, products: &[Product], i: u64, key: String) -> OrderRequest {
    let buyer = (i % shop.buyers.len() as u64) as usize;
    let product = (i % products.len() as u64) as usize;
    OrderRequest::new(buyer, &shop.buyers[buyer], product, &products[product], key)
}

/// The products of a rate or a saturation, on sale by a schedule, as a drop goes on sale:
/// the supply reaches the stock store well before the opening, so no early order is told
/// "sold out" while the store is still being told of the units.
async fn on_sale(
    api: &Api,
    shop: &Shop,
    args: &DrillArgs,
    supply: i64,
) -> anyhow::Result<Vec<Product>> {
    let at = drop_instant()?;
    let products = shop
        .products(api, args.products, supply, &Opening::At(at))
        .await?;
    let ahead = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(ahead + Duration::from_millis(200)).await;
    Ok(products)
}

/// The opening of a drill's drop: whole seconds, at least 10 s after the schedule is made.
fn drop_instant() -> anyhow::Result<chrono::DateTime<Utc>> {
    Ok(
        (Utc::now() + chrono::Duration::seconds(12))
            .duration_trunc(chrono::Duration::seconds(1))?,
    )
}

async fn burst(api: &Api, shop: &mut Shop, args: &DrillArgs) -> anyhow::Result<Ran> {
    // Without --stock, each product has exactly the units its buyers ask for: every order
    // is placed, and one unit more would be an oversell.
    let supply = args
        .stock
        .unwrap_or(args.buyers.div_ceil(args.products) as i64);
    let at = drop_instant()?;
    let products = shop
        .products(api, args.products, supply, &Opening::At(at))
        .await?;
    shop.keep_fresh(api, FRESH).await?;
    let requests: Vec<OrderRequest> = (0..args.buyers as u64)
        .map(|i| request(shop, &products, i, format!("drill-{}-burst-{i}", shop.run)))
        .collect();
    let until = |instant: chrono::DateTime<Utc>| {
        let ahead = (instant - Utc::now()).to_std().unwrap_or_default();
        tokio::time::Instant::now() + ahead
    };
    let release = until(at);
    // Connections are opened just before (a connection idle for long is closed by the shop).
    tokio::time::sleep_until(release - Duration::from_secs(3)).await;
    let failed = load::warm_up(api, args.buyers).await;
    if failed > 0 {
        bail!(
            "{failed} of {} connections failed to open before the drop: raise the open-file limit (`ulimit -n`) of the drill and the shop (README, \"The drill\")",
            args.buyers
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "burst: {} buyers, {} products of {supply} units, the drop opens at {at}",
        args.buyers, args.products
    )?;
    drop(out);
    // The CPU from the opening on, not the wait for it.
    tokio::time::sleep_until(release - Duration::from_millis(20)).await;
    let before = CpuSample::now(args.server_pid);
    let rss = RssPeak::watch(args.server_pid);
    let recorded = load::burst(api, requests, release, products.len()).await;
    let cpu = Cpu::between(&before, &CpuSample::now(args.server_pid));
    let mut ran = Ran::new(products);
    ran.peak(rss.peak());
    ran.orders("burst".into(), recorded, cpu)?;
    Ok(ran)
}

async fn rate(
    api: &Api,
    shop: &mut Shop,
    args: &DrillArgs,
    first: u32,
    duration: Duration,
    find_max: bool,
) -> anyhow::Result<Ran> {
    let supply = args.stock.unwrap_or(AMPLE);
    let products = on_sale(api, shop, args, supply).await?;
    let mut ran = Ran::new(products.clone());
    let (mut passed, mut failed): (Option<u32>, Option<u32>) = (None, None);
    let mut rps = first;
    for step in 0.. {
        shop.keep_fresh(api, FRESH).await?;
        let total = (f64::from(rps) * duration.as_secs_f64()) as u64;
        let bar = progress(total, "orders answered");
        let before = CpuSample::now(args.server_pid);
        let rss = RssPeak::watch(args.server_pid);
        let recorded = {
            let shop = &*shop;
            let products = &products;
            load::open_loop(
                api,
                rps,
                duration,
                args.buyers,
                products.len(),
                |i| request(shop, products, i, format!("drill-{}-r{step}-{i}", shop.run)),
                &bar,
            )
            .await
        };
        bar.finish_and_clear();
        let cpu = Cpu::between(&before, &CpuSample::now(args.server_pid));
        ran.peak(rss.peak());
        let phase = ran.orders(format!("rate {rps}/s"), recorded, cpu)?;
        let ok = phase.latency_ms.p99 <= P99_BOUND_MS && phase.outcomes.errors() == 0;
        if !find_max {
            break;
        }
        if ok {
            passed = Some(rps);
        } else {
            failed = Some(rps);
        }
        let next = match (passed, failed) {
            (Some(p), None) => p.saturating_mul(2),
            (None, Some(f)) => f / 2,
            (Some(p), Some(f)) => p + (f - p) / 2,
            (None, None) => unreachable!("one of them was just set"),
        };
        // Within 5% (or 50/s) of the boundary, or nothing left to try.
        let close = match (passed, failed) {
            (Some(p), Some(f)) => f - p <= (p / 20).max(50),
            (None, Some(f)) => f <= 1,
            _ => false,
        };
        if close || next == 0 || step >= 11 {
            break;
        }
        rps = next;
        // Let the shop settle between rates.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    ran.max_rate = if find_max { passed } else { None };
    Ok(ran)
}

async fn saturate(
    api: &Api,
    shop: &mut Shop,
    args: &DrillArgs,
    duration: Duration,
) -> anyhow::Result<Ran> {
    let supply = args.stock.unwrap_or(AMPLE);
    let products = on_sale(api, shop, args, supply).await?;
    shop.keep_fresh(api, FRESH).await?;
    let mut ran = Ran::new(products.clone());
    load::warm_up(api, args.buyers).await;
    // `/healthz` first, by the same client and workers: the HTTP stack's own ceiling here.
    let bar = progress(0, "healthz answered");
    let before = CpuSample::now(args.server_pid);
    let health = {
        let api = api.clone();
        load::closed_loop(
            args.buyers,
            duration,
            0,
            move |_, _| {
                let api = api.clone();
                async move { load::health(&api).await }.boxed()
            },
            &bar,
        )
        .await
    };
    bar.finish_and_clear();
    let health_cpu = Cpu::between(&before, &CpuSample::now(args.server_pid));
    let health = Phase::of("healthz", &health);
    print_phase(&health, &health_cpu)?;
    let bar = progress(0, "orders answered");
    let before = CpuSample::now(args.server_pid);
    let rss = RssPeak::watch(args.server_pid);
    let recorded = {
        let (api, run) = (api.clone(), shop.run.clone());
        let buyers = Arc::new(shop.buyers.clone());
        let items = Arc::new(products.clone());
        load::closed_loop(
            args.buyers,
            duration,
            products.len(),
            move |worker, n| {
                let product = (worker + n as usize) % items.len();
                let request = OrderRequest::new(
                    worker,
                    &buyers[worker],
                    product,
                    &items[product],
                    format!("drill-{run}-s{worker}-{n}"),
                );
                let api = api.clone();
                async move { request.send(&api).await }.boxed()
            },
            &bar,
        )
        .await
    };
    bar.finish_and_clear();
    let cpu = Cpu::between(&before, &CpuSample::now(args.server_pid));
    ran.peak(rss.peak());
    let orders = ran.orders("orders".into(), recorded, cpu)?.per_second;
    ran.ratio = Some(orders / health.per_second.max(1e-9));
    ran.phases.insert(0, health);
    ran.cpu.insert(0, ("healthz".into(), health_cpu));
    Ok(ran)
}
