//! The scheduler: fires due rows of the durable schedule (filled from events by the
//! `schedule` projection) through the normal command path.
//!
//! Each round it claims up to [`CLAIM_BATCH`] due rows in a short transaction, with `FOR
//! UPDATE SKIP LOCKED` on MySQL so that several service processes claim disjoint rows (on
//! SQLite, the single writer, one process holds the `scheduler` lease), marking them
//! `claimed` until [`CLAIM_TTL`] from now. It then sends each row's command as the system
//! actor and records the outcome: `done` when the command went through or the domain says
//! the step no longer applies, or back to `pending` with a backoff and the last error when
//! something failed on the way. A row whose claimer died becomes due again when the claim
//! expires; firing it again is harmless, since the domain makes every automatic step a no-op
//! or a refusal once it has happened.
//!
//! The run loop is here; `claims` takes and records claims, `firing` turns a row into its
//! command, and `nightly` plans and runs the nightly jobs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, NaiveTime, Utc};
use futures_util::future::join_all;
use openrun_domain::order::{OrderCommand, OrderError};
use openrun_domain::product::{ProductCommand, ProductError};
use openrun_domain::{Issuer, ScheduleId};
use openrun_projections::schedule::{Kind, TABLE, micros};
use openrun_projections::store::{self, Pool};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::SharedClock;
use crate::commands::{CommandError, Commands};
use crate::db::{Database, with_pool};
use crate::eventstore::{EventStore, Metadata};

mod claims;
mod firing;
mod nightly;

use claims::{claim, extend_claim, oldest_due, record};
use firing::fire;
pub use nightly::next_local;
use nightly::{NIGHTLY_PLANNING, nightly_audit, plan_nightly};

/// Most rows claimed per round.
pub const CLAIM_BATCH: i64 = 200;
/// How long a claim lasts before another scheduler may fire the row again.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often to look for due rows: transitions fire within about this of their due time.
pub const TICK: Duration = Duration::from_millis(250);
/// The lease that makes one process the scheduler on SQLite.
const LEASE: &str = "scheduler";
const LEASE_TTL: Duration = Duration::from_secs(5);

/// A claimed row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Due {
    id: String,
    kind: String,
    stream_id: String,
    schedule_id: Option<String>,
    due_at: i64,
    attempts: i32,
}

/// What firing a row came to.
enum Outcome {
    Done(Option<String>),
    Retry { error: String },
}

/// The running scheduler of this process.
pub struct Scheduler {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the scheduler fires rows with.
pub struct Jobs {
    /// The command path, for product and order transitions.
    pub commands: Commands,
    /// The database, for the nightly audit.
    pub db: Database,
    /// The log, for the nightly audit.
    pub events: Arc<dyn EventStore>,
    /// This process's stock store, for the nightly audit (its counters against the log).
    pub stock: Option<Arc<dyn crate::stock::StockStore>>,
    /// When the nightly jobs run, in the server's time zone.
    pub nightly_at: NaiveTime,
    /// The nightly audit's bound on paying a refund back.
    pub refund_within: Duration,
    /// This host's clock, for planning the nightly runs (claims use the database's clock).
    pub clock: SharedClock,
}

impl Scheduler {
    /// Starts firing due rows; the schedule tables must exist (the projection installs them).
    pub fn start(jobs: Jobs) -> Self {
        let (shutdown, stop) = watch::channel(false);
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let task = tokio::spawn(run(Arc::new(jobs), owner, stop));
        Self { shutdown, task }
    }

    /// Stops after the current round.
    pub async fn stop(self) {
        // Ignored error: the task already stopped.
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the scheduler task failed");
        }
    }
}

async fn run(jobs: Arc<Jobs>, owner: String, mut stop: watch::Receiver<bool>) {
    let pool = &jobs.db;
    let mut nightly_planned: Option<std::time::Instant> = None;
    let mut long_jobs = JoinSet::new();
    // A dropped sender is a stop too (the application went away).
    while !*stop.borrow() && stop.has_changed().is_ok() {
        // Reap finished long jobs (their outcome is recorded by the job itself).
        while long_jobs.try_join_next().is_some() {}
        if nightly_planned.is_none_or(|at| at.elapsed() >= NIGHTLY_PLANNING) {
            let local = jobs.clock.now().with_timezone(&Local);
            match plan_nightly(pool, jobs.nightly_at, local).await {
                Ok(()) => nightly_planned = Some(std::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot plan the nightly jobs"),
            }
        }
        match round(pool, &jobs, &owner, &mut long_jobs).await {
            // A full batch: there may be more due right now.
            Ok(n) if n as i64 == CLAIM_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "scheduler round failed"),
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
    // A long job cut short keeps its claim until it expires, then runs again.
    long_jobs.shutdown().await;
}

/// Claims and fires the due rows; returns how many it claimed. Transitions are fired and
/// recorded before it returns; long jobs (the nightly audit) get a longer claim and run in
/// `long_jobs`, so that they hold up no transition.
pub(crate) async fn round(
    pool: &Pool,
    jobs: &Arc<Jobs>,
    owner: &str,
    long_jobs: &mut JoinSet<()>,
) -> anyhow::Result<usize> {
    if pool.is_sqlite() && !store::acquire_lease(pool, LEASE, owner, LEASE_TTL).await? {
        return Ok(0);
    }
    // The database's clock, not this host's: a host whose clock runs fast must not see a live
    // claim of another process as expired.
    let now = store::database_now(pool).await?;
    if let Some(lag) = oldest_due(pool, now).await? {
        metrics::gauge!("openrun_schedule_lag_seconds").set((now - lag).max(0) as f64 / 1e6);
    } else {
        metrics::gauge!("openrun_schedule_lag_seconds").set(0.0);
    }
    let claimed = claim(pool, owner, now).await?;
    let count = claimed.len();
    let (long, short): (Vec<Due>, Vec<Due>) = claimed
        .into_iter()
        .partition(|due| Kind::parse(&due.kind) == Some(Kind::NightlyAudit));
    for due in long {
        let until = now + i64::try_from(LONG_CLAIM_TTL.as_micros()).unwrap_or(i64::MAX);
        if !extend_claim(pool, owner, &due.id, until).await? {
            continue;
        }
        let (pool, jobs, owner) = (pool.clone(), Arc::clone(jobs), owner.to_owned());
        long_jobs.spawn(async move {
            let outcome = fire(&jobs, &due).await;
            if let Err(e) = record(&pool, &owner, std::slice::from_ref(&due), vec![outcome]).await
            {
                tracing::error!(error = format!("{e:#}"), row = %due.id, "cannot record a nightly job");
            }
        });
    }
    if !short.is_empty() {
        let outcomes = join_all(short.iter().map(|due| fire(jobs, due))).await;
        record(pool, owner, &short, outcomes).await?;
    }
    Ok(count)
}

/// How long the claim of a long job lasts: longer than the job may take, so that no other
/// process starts it again meanwhile.
pub const LONG_CLAIM_TTL: Duration = Duration::from_secs(3600);

/// The scheduler's settings as read (`NIGHTLY_AT`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RawSettings {
    pub(crate) nightly_at: String,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            nightly_at: "04:00".into(),
        }
    }
}

/// The scheduler's settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// When the nightly jobs run, in the server's time zone.
    pub nightly_at: NaiveTime,
}

impl RawSettings {
    pub(crate) fn validate(self) -> Result<SchedulerSettings, crate::config::ConfigError> {
        let nightly_at = NaiveTime::parse_from_str(&self.nightly_at, "%H:%M").map_err(|_| {
            crate::config::ConfigError::new(
                "NIGHTLY_AT",
                format!("expected HH:MM such as 04:00, got {:?}", self.nightly_at),
            )
        })?;
        Ok(SchedulerSettings { nightly_at })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::claims::retry_at;
    use super::firing::classify_order;
    use super::nightly::next_in;
    use super::*;

    #[test]
    fn refusals_close_a_row_and_failures_retry_with_growing_backoff() {
        let not_due = CommandError::Rejected(OrderError::NotDue {
            step: openrun_domain::order::AutoStep::Ship,
            due_at: Utc::now(),
        });
        assert!(classify_order::<()>(Err(not_due)).is_err());
        let gone = CommandError::Rejected(OrderError::NotPlaced);
        assert!(
            matches!(classify_order::<()>(Err(gone)), Ok(Some(note)) if note.starts_with("not applicable"))
        );
        let conflict = CommandError::Conflict {
            stream: crate::eventstore::StreamRef::new("order", "o"),
            actual: 2,
        };
        assert!(classify_order::<()>(Err(conflict)).is_err());
        let lost = CommandError::OutcomeUnknown(crate::eventstore::EventStoreError::ShuttingDown);
        assert!(
            classify_order::<()>(Err(lost)).is_err(),
            "a lost commit fires again"
        );
        assert_eq!(classify_order(Ok(())), Ok(None));
        let now = micros(Utc::now());
        let waits: Vec<i64> = [0, 1, 2, 3, 20]
            .iter()
            .map(|a| (retry_at(now, *a) - now) / 1_000_000)
            .collect();
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert!(waits[4] <= 600, "capped at ten minutes: {waits:?}");
    }

    #[test]
    fn the_next_nightly_run_is_strictly_after_now() {
        let four = NaiveTime::from_hms_opt(4, 0, 0).unwrap();
        let before = Local.with_ymd_and_hms(2026, 11, 25, 3, 59, 0).unwrap();
        let at = Local.with_ymd_and_hms(2026, 11, 25, 4, 0, 0).unwrap();
        let after = Local.with_ymd_and_hms(2026, 11, 25, 9, 30, 0).unwrap();
        assert_eq!(next_local(four, before), at.with_timezone(&Utc));
        let tomorrow = Local
            .with_ymd_and_hms(2026, 11, 26, 4, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next_local(four, at), tomorrow);
        assert_eq!(next_local(four, after), tomorrow);
    }

    /// A zone whose clocks jump from 02:00 to 03:00 on 2026-03-29 (+01:00 to +02:00).
    #[derive(Debug, Clone, Copy)]
    struct SpringForward;

    impl chrono::TimeZone for SpringForward {
        type Offset = chrono::FixedOffset;

        fn from_offset(_: &chrono::FixedOffset) -> Self {
            Self
        }

        fn offset_from_local_date(
            &self,
            _: &chrono::NaiveDate,
        ) -> chrono::MappedLocalTime<chrono::FixedOffset> {
            chrono::MappedLocalTime::Single(chrono::FixedOffset::east_opt(3600).unwrap())
        }

        fn offset_from_local_datetime(
            &self,
            local: &chrono::NaiveDateTime,
        ) -> chrono::MappedLocalTime<chrono::FixedOffset> {
            let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
            let (gap, end) = (
                day.and_hms_opt(2, 0, 0).unwrap(),
                day.and_hms_opt(3, 0, 0).unwrap(),
            );
            match *local {
                l if l < gap => {
                    chrono::MappedLocalTime::Single(chrono::FixedOffset::east_opt(3600).unwrap())
                }
                l if l < end => chrono::MappedLocalTime::None,
                _ => chrono::MappedLocalTime::Single(chrono::FixedOffset::east_opt(7200).unwrap()),
            }
        }

        fn offset_from_utc_date(&self, _: &chrono::NaiveDate) -> chrono::FixedOffset {
            chrono::FixedOffset::east_opt(3600).unwrap()
        }

        fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> chrono::FixedOffset {
            let switch = chrono::NaiveDate::from_ymd_opt(2026, 3, 29)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            chrono::FixedOffset::east_opt(if *utc < switch { 3600 } else { 7200 }).unwrap()
        }
    }

    #[test]
    fn a_nightly_time_the_clock_skips_runs_right_after_the_gap() {
        let half_past_two = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        let day_before = SpringForward
            .with_ymd_and_hms(2026, 3, 28, 12, 0, 0)
            .unwrap();
        let after_gap = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap(); // 03:00 local
        assert_eq!(
            next_in(half_past_two, day_before, &SpringForward),
            after_gap
        );
        let next_day = Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap(); // 02:30 local
        assert_eq!(
            next_in(
                half_past_two,
                after_gap.with_timezone(&SpringForward),
                &SpringForward
            ),
            next_day
        );
    }
}
