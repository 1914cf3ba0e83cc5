//! Rebuild: replay the whole log into fresh tables, then swap them in for the live ones.
//!
//! The rebuild fills `<table>__rebuild` tables and their own checkpoint from position 0 with
//! the ordinary [`runner::step`], then swaps data and checkpoint in one step (one `RENAME
//! TABLE` on MySQL, one transaction on SQLite) and drops the old tables. The live follower
//! (in this or any other process) keeps serving meanwhile: its batches write the live tables
//! and move the live checkpoint by compare-and-set, so a batch that straddles the swap finds
//! the checkpoint moved and rolls back, and the next one continues from the rebuilt
//! checkpoint. State a projection's tables hold besides the log (the scheduler's progress in
//! the schedule) is carried over by [`Projection::carry_over`], before and after the swap. A
//! crash before the swap leaves the live projection untouched. A lease named
//! `<projection>#rebuild` keeps two rebuilds of one projection from running at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::Projection;
use crate::log::EventSource;
use crate::runner::{self, Step};
use crate::store::{self, Pool, Tables};

/// Events per transaction while rebuilding.
const REBUILD_BATCH: usize = 2000;

/// Rebuilds `projection` from zero and swaps it in. `progress(applied_up_to, head)` is called
/// after every batch. Returns the position the rebuilt projection is at.
pub async fn rebuild(
    pool: &Pool,
    source: &dyn EventSource,
    projection: Arc<dyn Projection>,
    owner: &str,
    lease_ttl: Duration,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<u64> {
    let name = projection.name();
    let lease = format!("{name}#rebuild");
    if !store::acquire_lease(pool, &lease, owner, lease_ttl).await? {
        bail!("{name}: another rebuild of this projection is running");
    }
    let renewer = {
        let (pool, owner, lease) = (pool.clone(), owner.to_owned(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease_ttl / 3).await;
                if let Err(e) = store::acquire_lease(&pool, &lease, &owner, lease_ttl).await {
                    tracing::warn!(projection = name, error = %e, "cannot renew the rebuild lease");
                }
            }
        })
    };
    let result = replay_and_swap(pool, source, projection.as_ref(), progress).await;
    renewer.abort();
    // Ignored error: the lease expires on its own.
    let _ = store::release_lease(pool, &lease, owner).await;
    result
}

async fn replay_and_swap(
    pool: &Pool,
    source: &dyn EventSource,
    projection: &dyn Projection,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<u64> {
    let name = projection.name();
    drop_tables(pool, projection, &Tables::REBUILD).await?;
    drop_tables(pool, projection, &Tables::RETIRED).await?;
    projection.create_tables(pool, &Tables::REBUILD).await?;
    store::create_checkpoint(pool, name, &Tables::REBUILD).await?;
    let position = loop {
        match runner::step(pool, source, projection, &Tables::REBUILD, REBUILD_BATCH).await? {
            Step::Applied(at) => {
                let head = source
                    .head_position()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                progress(at, head);
            }
            Step::Idle(at) => break at,
            Step::NotLeader => bail!("{name}: the rebuild checkpoint moved under the rebuild"),
        }
    };
    projection
        .carry_over(pool, &Tables::LIVE, &Tables::REBUILD)
        .await
        .with_context(|| format!("{name}: carrying state over into the rebuilt tables"))?;
    swap(pool, projection)
        .await
        .with_context(|| format!("{name}: swapping the rebuilt tables in"))?;
    projection
        .carry_over(pool, &Tables::RETIRED, &Tables::LIVE)
        .await
        .with_context(|| format!("{name}: carrying state over after the swap"))?;
    drop_tables(pool, projection, &Tables::RETIRED).await?;
    Ok(position)
}

fn all_tables(projection: &dyn Projection, tables: &Tables) -> Vec<String> {
    let mut names: Vec<String> = projection.tables().iter().map(|t| tables.name(t)).collect();
    names.push(tables.checkpoint(projection.name()));
    names
}

async fn drop_tables(
    pool: &Pool,
    projection: &dyn Projection,
    tables: &Tables,
) -> anyhow::Result<()> {
    for table in all_tables(projection, tables) {
        pool.execute(&format!("DROP TABLE IF EXISTS {table}"))
            .await
            .with_context(|| format!("dropping {table}"))?;
    }
    Ok(())
}

async fn swap(pool: &Pool, projection: &dyn Projection) -> anyhow::Result<()> {
    let live = all_tables(projection, &Tables::LIVE);
    let rebuilt = all_tables(projection, &Tables::REBUILD);
    let retired = all_tables(projection, &Tables::RETIRED);
    match pool {
        Pool::MySql(_) => {
            // One statement: MySQL swaps all the tables atomically.
            let renames: Vec<String> = live
                .iter()
                .zip(&rebuilt)
                .zip(&retired)
                .map(|((live, rebuilt), retired)| {
                    format!("{live} TO {retired}, {rebuilt} TO {live}")
                })
                .collect();
            pool.execute(&format!("RENAME TABLE {}", renames.join(", ")))
                .await?;
        }
        Pool::Sqlite(sqlite) => {
            let mut tx = sqlite.begin_with("BEGIN IMMEDIATE").await?;
            for ((live, rebuilt), retired) in live.iter().zip(&rebuilt).zip(&retired) {
                for sql in [
                    format!("ALTER TABLE {live} RENAME TO {retired}"),
                    format!("ALTER TABLE {rebuilt} RENAME TO {live}"),
                ] {
                    sqlx::query(&sql).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
