//! The nightly jobs: planned into the schedule at `NIGHTLY_AT` local time, run as long jobs.

use super::*;

/// How often each process makes sure the next nightly run is in the schedule.
pub(super) const NIGHTLY_PLANNING: Duration = Duration::from_secs(60);

/// The next instant the local clock shows `at`, strictly after now. On a day whose clock
/// skips `at` (a daylight-saving change), the first instant after the gap.
pub fn next_local(at: NaiveTime, now: chrono::DateTime<Local>) -> chrono::DateTime<Utc> {
    next_in(at, now, &Local)
}

pub(super) fn next_in<Tz: chrono::TimeZone>(
    at: NaiveTime,
    now: chrono::DateTime<Tz>,
    zone: &Tz,
) -> chrono::DateTime<Utc> {
    let mut day = now.date_naive();
    loop {
        let wall = day.and_time(at);
        // Gaps are at most a few hours; step in minutes to the first wall time that exists.
        let candidate = (0..=240).find_map(|m| {
            (wall + chrono::Duration::minutes(m))
                .and_local_timezone(zone.clone())
                .earliest()
        });
        if let Some(candidate) = candidate
            && candidate > now
        {
            return candidate.with_timezone(&Utc);
        }
        day = day.succ_opt().unwrap_or(day);
    }
}

/// A nightly run missed by less than this (the service was down at the time) runs at
/// start-up; one missed by more waits for the next night.
const NIGHTLY_CATCH_UP: chrono::Duration = chrono::Duration::hours(1);

/// Puts the next nightly run in the schedule, and the last one if it was missed within
/// [`NIGHTLY_CATCH_UP`]; each once, as a row's id is its local date.
pub(super) async fn plan_nightly(
    pool: &Pool,
    at: NaiveTime,
    now: chrono::DateTime<Local>,
) -> sqlx::Result<()> {
    let next = next_local(at, now);
    let last = next_local(at, now - chrono::Duration::days(1));
    let mut runs = vec![next];
    if last <= now && now.with_timezone(&Utc) - last < NIGHTLY_CATCH_UP {
        runs.push(last);
    }
    // A run already planned stays; any other refusal is an error, not a warning.
    let keep = if pool.is_sqlite() {
        "ON CONFLICT DO NOTHING"
    } else {
        "ON DUPLICATE KEY UPDATE id = id"
    };
    let sql = format!(
        "INSERT INTO {TABLE} (id, kind, stream_id, schedule_id, due_at, status, next_attempt_at) \
         VALUES (?, ?, '-', NULL, ?, 'pending', ?) {keep}"
    );
    for run in runs {
        let id = format!("nightly/{}/audit", run.with_timezone(&Local).date_naive());
        let due = micros(run);
        with_pool!(pool, p => {
            let q = sqlx::query(&sql).bind(id).bind(Kind::NightlyAudit.as_str()).bind(due).bind(due);
            q.execute(p).await.map(drop)?
        });
    }
    Ok(())
}

/// The nightly self-audit: the same checks as `openrun audit`, with the number of violations
/// as the gauge `openrun_audit_violations` and each one logged.
pub(super) async fn nightly_audit(jobs: &Jobs) -> Result<Option<String>, String> {
    let checks = crate::ops::audit(
        &jobs.db,
        jobs.events.as_ref(),
        jobs.stock.as_deref(),
        jobs.refund_within,
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    let violations: usize = checks.iter().map(|c| c.violations.len()).sum();
    metrics::gauge!("openrun_audit_violations").set(violations as f64);
    for check in checks.iter().filter(|c| !c.violations.is_empty()) {
        tracing::error!(check = check.name, violations = ?check.violations, "nightly audit found violations");
    }
    Ok((violations > 0).then(|| format!("{violations} audit violations")))
}
