//! Claims on due rows and the outcomes recorded for them, on the database's clock.

use super::*;

/// Moves our claim of row `id` to expire at `until`; false when the claim is no longer ours.
pub(super) async fn extend_claim(
    pool: &Pool,
    owner: &str,
    id: &str,
    until: i64,
) -> sqlx::Result<bool> {
    let sql = format!(
        "UPDATE {TABLE} SET next_attempt_at = ? WHERE id = ? AND status = 'claimed' AND claimed_by = ?"
    );
    let done = with_pool!(pool, p => {
        let q = sqlx::query(&sql).bind(until).bind(id).bind(owner);
        q.execute(p).await?.rows_affected()
    });
    Ok(done == 1)
}

pub(super) async fn oldest_due(pool: &Pool, now: i64) -> sqlx::Result<Option<i64>> {
    let sql = format!(
        "SELECT MIN(due_at) FROM {TABLE} WHERE status IN ('pending', 'claimed') AND due_at <= ?"
    );
    with_pool!(pool, p => sqlx::query_scalar(&sql).bind(now).fetch_one(p).await)
}

pub(super) async fn claim(pool: &Pool, owner: &str, now: i64) -> sqlx::Result<Vec<Due>> {
    let select = format!(
        "SELECT CAST(id AS CHAR) AS id, kind, CAST(stream_id AS CHAR) AS stream_id, schedule_id, \
         due_at, attempts FROM {TABLE} \
         WHERE status IN ('pending', 'claimed') AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
    );
    let expires = now + i64::try_from(CLAIM_TTL.as_micros()).unwrap_or(i64::MAX);
    let mark = |n: usize| {
        format!(
            "UPDATE {TABLE} SET status = 'claimed', claimed_by = ?, attempts = attempts + 1, next_attempt_at = ? \
             WHERE id IN ({})",
            vec!["?"; n].join(", ")
        )
    };
    // MySQL: rows other schedulers hold are skipped. SQLite: one writer at a time.
    let (begin, select) = if pool.is_sqlite() {
        ("BEGIN IMMEDIATE", select)
    } else {
        ("BEGIN", format!("{select} FOR UPDATE SKIP LOCKED"))
    };
    with_pool!(pool, p => {
        let mut tx = p.begin_with(begin).await?;
        let due: Vec<Due> = sqlx::query_as(&select)
            .bind(now)
            .bind(CLAIM_BATCH)
            .fetch_all(&mut *tx)
            .await?;
        if !due.is_empty() {
            let sql = mark(due.len());
            let mut q = sqlx::query(&sql).bind(owner).bind(expires);
            for d in &due {
                q = q.bind(&d.id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(due)
    })
}

/// Backoff after a failed attempt: 1 s, 2 s, 4 s, ... up to 10 minutes.
pub(super) fn retry_at(now: i64, attempts: i32) -> i64 {
    let secs = 1i64 << attempts.clamp(0, 10);
    now + secs.min(600) * 1_000_000
}

pub(super) async fn record(
    pool: &Pool,
    owner: &str,
    claimed: &[Due],
    outcomes: Vec<Outcome>,
) -> anyhow::Result<()> {
    // The database's instant once the work is done (a long job's backoff starts when it
    // failed, not when it was claimed).
    let now = store::database_now(pool).await?;
    let done = format!(
        "UPDATE {TABLE} SET status = 'done', closed_at = ?, last_error = ?, claimed_by = NULL \
         WHERE id = ? AND status = 'claimed' AND claimed_by = ?"
    );
    let retry = format!(
        "UPDATE {TABLE} SET status = 'pending', next_attempt_at = ?, last_error = ?, claimed_by = NULL \
         WHERE id = ? AND status = 'claimed' AND claimed_by = ?"
    );
    // Rows in key order, the order in which a rebuild's swap locks them: the two never
    // deadlock.
    let mut outcomes: Vec<(&Due, Outcome)> = claimed.iter().zip(outcomes).collect();
    outcomes.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let mut tx = pool.begin().await?;
    for (due, outcome) in outcomes {
        let (sql, at, note) = match outcome {
            Outcome::Done(note) => (&done, now, note),
            Outcome::Retry { error } => {
                tracing::warn!(row = %due.id, attempts = due.attempts + 1, error = %error, "scheduled transition failed; will retry");
                (&retry, retry_at(now, due.attempts), Some(error))
            }
        };
        match &mut tx {
            store::Tx::MySql(t) => {
                let q = sqlx::query(sql)
                    .bind(at)
                    .bind(note)
                    .bind(&due.id)
                    .bind(owner);
                q.execute(&mut **t).await.map(drop)?;
            }
            store::Tx::Sqlite(t) => {
                let q = sqlx::query(sql)
                    .bind(at)
                    .bind(note)
                    .bind(&due.id)
                    .bind(owner);
                q.execute(&mut **t).await.map(drop)?;
            }
        }
        let late = (now - due.due_at).max(0) as f64 / 1e6;
        metrics::histogram!("openrun_schedule_fire_delay_seconds").record(late);
    }
    tx.commit().await?;
    Ok(())
}
