//! What a drill reports: each phase's figures, the machine's CPU (the drill's own share
//! among them, so that a client-bound run says so), the server's memory, the JSON report and
//! the SVG chart.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use super::load::{Counts, Outcome, Recorded};

/// Percentiles of a phase, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50: ms(0.50),
            p95: ms(0.95),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// One slice of a phase (a second; 50 ms in a burst).
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since the phase started, at the slice's start.
    pub t: f64,
    pub answers: u64,
    pub successes: u64,
    /// Successes per second within the slice.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The figures of one phase (a burst, one rate, the orders or `/healthz` of a saturation).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub requests: u64,
    /// From the first send to the last answer.
    pub seconds: f64,
    /// Successes (201 or 200) per second over `seconds`.
    pub per_second: f64,
    pub answers_per_second: f64,
    pub latency_ms: Latency,
    pub outcomes: Counts,
    /// Unexpected answers by status and problem type.
    pub other: std::collections::BTreeMap<String, u64>,
    pub series: Vec<Point>,
}

impl Phase {
    pub fn of(name: impl Into<String>, r: &Recorded) -> Self {
        let seconds = r
            .last
            .map_or(0.0, |last| last.duration_since(r.started).as_secs_f64())
            .max(1e-3);
        let successes = r.counts.get(Outcome::Success);
        Self {
            name: name.into(),
            requests: r.counts.total(),
            seconds,
            per_second: successes as f64 / seconds,
            answers_per_second: r.counts.total() as f64 / seconds,
            latency_ms: Latency::of(&r.latency),
            outcomes: r.counts.clone(),
            other: r.other.clone(),
            series: r
                .seconds
                .iter()
                .enumerate()
                .map(|(i, s)| Point {
                    t: i as f64 * r.bucket.as_secs_f64(),
                    answers: s.counts.total(),
                    successes: s.counts.get(Outcome::Success),
                    per_second: s.counts.get(Outcome::Success) as f64 / r.bucket.as_secs_f64(),
                    p50_ms: s.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                })
                .collect(),
        }
    }

    /// Two lines for the terminal.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let o = &self.outcomes;
        writeln!(
            out,
            "{}: {} requests in {:.3} s, {:.0}/s succeeded ({:.0} answers/s); latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.name,
            self.requests,
            self.seconds,
            self.per_second,
            self.answers_per_second,
            self.latency_ms.p50,
            self.latency_ms.p95,
            self.latency_ms.p99,
            self.latency_ms.max
        )?;
        writeln!(
            out,
            "  outcomes: {} success, {} sold out, {} limit, {} other 4xx, {} 5xx, {} transport errors",
            o.get(Outcome::Success),
            o.get(Outcome::SoldOut),
            o.get(Outcome::Limit),
            o.get(Outcome::OtherClient),
            o.get(Outcome::Server),
            o.get(Outcome::Transport)
        )?;
        for (what, n) in &self.other {
            writeln!(out, "    {n} x {what}")?;
        }
        Ok(())
    }
}

/// CPU time of the machine, of this process and of the server process, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    machine_busy: f64,
    machine_total: f64,
    client: f64,
    server: Option<f64>,
    at: std::time::Instant,
}

/// Clock ticks per second of `/proc` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

fn proc_times(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces: the fields after it start past the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

fn machine_times() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / TICKS, total / TICKS))
}

impl CpuSample {
    pub fn now(server: Option<u32>) -> Self {
        let (machine_busy, machine_total) = machine_times().unwrap_or((0.0, 0.0));
        Self {
            machine_busy,
            machine_total,
            client: proc_times("/proc/self/stat").unwrap_or(0.0),
            server: server.and_then(|pid| proc_times(&format!("/proc/{pid}/stat"))),
            at: std::time::Instant::now(),
        }
    }
}

/// The CPU used between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub cores: usize,
    /// The machine's busy share (all processes), 0 to 1.
    pub machine_busy: f64,
    /// The drill's own cores in use on average, and its share of the machine.
    pub client_cores: f64,
    pub client_share: f64,
    /// The server's, when its pid was given.
    pub server_cores: Option<f64>,
    /// Whether the drill itself was a limit: the machine was saturated and the drill took a
    /// large part of it.
    pub client_bound: bool,
}

impl Cpu {
    pub fn between(a: &CpuSample, b: &CpuSample) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let total = (b.machine_total - a.machine_total).max(1e-3);
        let machine_busy = ((b.machine_busy - a.machine_busy) / total).clamp(0.0, 1.0);
        let client_cores = (b.client - a.client) / wall;
        let client_share = client_cores / cores as f64;
        Self {
            cores,
            machine_busy,
            client_cores,
            client_share,
            server_cores: a.server.zip(b.server).map(|(a, b)| (b - a) / wall),
            client_bound: machine_busy > 0.9 && client_share > 0.25,
        }
    }

    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let server = self
            .server_cores
            .map_or(String::new(), |s| format!(", the server {s:.2}"));
        writeln!(
            out,
            "  cpu: machine {:.0}% busy of {} cores; the drill used {:.2} cores ({:.0}%){server}",
            self.machine_busy * 100.0,
            self.cores,
            self.client_cores,
            self.client_share * 100.0
        )?;
        if self.client_bound {
            writeln!(
                out,
                "  the client itself is a limit here: the machine was saturated and the drill took {:.0}% of it; run it on another machine for the server's ceiling",
                self.client_share * 100.0
            )?;
        }
        Ok(())
    }
}

/// The server's resident memory in MB (`VmRSS`), when its pid is known.
pub fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// Samples the server's memory every 100 ms until dropped; the peak.
pub struct RssPeak {
    peak: std::sync::Arc<std::sync::Mutex<Option<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    pub fn watch(pid: Option<u32>) -> Self {
        let peak = std::sync::Arc::new(std::sync::Mutex::new(rss_mb(pid)));
        let shared = std::sync::Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let now = rss_mb(pid);
                if let Ok(mut p) = shared.lock() {
                    *p = match (*p, now) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        });
        Self { peak, task }
    }

    pub fn peak(self) -> Option<f64> {
        self.task.abort();
        self.peak.lock().ok().and_then(|p| *p)
    }
}

/// The server's memory at the three moments the drill names.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub after_sign_in_mb: Option<f64>,
    pub peak_of_orders_mb: Option<f64>,
    pub settled_mb: Option<f64>,
}

/// Writes `report` as `{name}.json` and the chart of `phases` as `{name}.svg` in `out`.
pub fn write(
    out: &Path,
    name: &str,
    report: &impl Serialize,
    phases: &[Phase],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = out.join(format!("{name}.svg"));
    chart(&svg, name, phases).map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
    Ok(())
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// Throughput (successes per second) above, latency p50 and p99 per second
/// below, one colour per phase.
fn chart(path: &Path, title: &str, phases: &[Phase]) -> ChartResult {
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(360);
    let seconds = phases
        .iter()
        .flat_map(|p| p.series.last().map(|s| s.t))
        .fold(0.1_f64, f64::max)
        * 1.05;
    let most = phases
        .iter()
        .flat_map(|p| p.series.iter().map(|s| s.per_second))
        .fold(1.0_f64, f64::max);
    let slowest = phases
        .iter()
        .flat_map(|p| p.series.iter().map(|s| s.p99_ms))
        .fold(1.0_f64, f64::max);
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let mut throughput = ChartBuilder::on(&top)
        .caption(
            format!("openrun drill: {title}, throughput"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..most * 1.1)?;
    throughput
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("per second")
        .draw()?;
    for (i, phase) in phases.iter().enumerate() {
        let colour = palette[i % palette.len()];
        throughput
            .draw_series(LineSeries::new(
                phase.series.iter().map(|s| (s.t, s.per_second)),
                colour.stroke_width(2),
            ))?
            .label(format!("{} succeeded/s", phase.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    throughput
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    let mut latency = ChartBuilder::on(&bottom)
        .caption(
            "latency per second (p50 solid, p99 thin)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..slowest * 1.1)?;
    latency
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()?;
    for (i, phase) in phases.iter().enumerate() {
        let colour = palette[i % palette.len()];
        let answered = || phase.series.iter().filter(|s| s.answers > 0);
        latency
            .draw_series(LineSeries::new(
                answered().map(|s| (s.t, s.p50_ms)),
                colour.stroke_width(2),
            ))?
            .label(format!("{} p50", phase.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        latency.draw_series(LineSeries::new(
            answered().map(|s| (s.t, s.p99_ms)),
            colour.stroke_width(1),
        ))?;
    }
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
