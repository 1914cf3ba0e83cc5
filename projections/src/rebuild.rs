//! Rebuild: replay the whole log into fresh tables, then swap them in for the live ones.
//!
//! The rebuild fills `<table>__rebuild` tables and their own checkpoint from position 0 with
//! the ordinary [`runner::step`], then swaps data and checkpoint in together. The live
//! follower (in this or any other process) keeps serving meanwhile: its batches write the
//! live tables and move the live checkpoint by compare-and-set, so a batch that straddles the
//! swap finds the checkpoint moved and rolls back, and the next one continues from the
//! rebuilt checkpoint.
//!
//! A projection whose tables hold state besides the log (the scheduler's progress in the
//! schedule) swaps in one transaction that first locks every live row, then carries that
//! state over ([`Projection::carry_over`]) and replaces the live rows and checkpoint with the
//! rebuilt ones. Nobody sees the state missing, not even for a moment: the scheduler's claims
//! skip the locked rows and its outcomes wait for the commit, and a crash anywhere in the swap
//! rolls all of it back. Other projections swap by renaming their tables (one `RENAME TABLE`
//! on MySQL, one transaction on SQLite).
//!
//! A lease named `<projection>#rebuild` keeps two rebuilds of one projection from running at
//! once. A rebuild stops as soon as it fails to renew its lease, and checks it holds the
//! lease inside the swap's transaction: one that lost it (a stall longer than the lease, and
//! another rebuild took over) never swaps. A crash before the swap leaves the live projection
//! untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::Projection;
use crate::log::{Batch, EventSource};
use crate::runner::{self, Step};
use crate::store::{self, Pool, Tables, Tx};

/// Events per transaction while rebuilding, and their most bytes.
const REBUILD_BATCH: Batch = Batch {
    events: 2000,
    bytes: 8 << 20,
};

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
    let lease = Lease {
        name: format!("{name}#rebuild"),
        owner: owner.to_owned(),
        lost: Arc::new(AtomicBool::new(false)),
    };
    if !store::acquire_lease(pool, &lease.name, owner, lease_ttl).await? {
        bail!("{name}: another rebuild of this projection is running");
    }
    let renewer = {
        let (pool, lease) = (pool.clone(), lease.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease_ttl / 3).await;
                match store::acquire_lease(&pool, &lease.name, &lease.owner, lease_ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        lease.lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // The lease may still be ours: the check in the swap decides.
                    Err(e) => {
                        tracing::warn!(projection = name, error = %e, "cannot renew the rebuild lease");
                    }
                }
            }
        })
    };
    let result = replay_and_swap(pool, source, projection.as_ref(), &lease, progress).await;
    renewer.abort();
    // Ignored error: the lease expires on its own.
    let _ = store::release_lease(pool, &lease.name, owner).await;
    result
}

/// The rebuild's lease, and whether its renewal found it taken.
#[derive(Clone)]
struct Lease {
    name: String,
    owner: String,
    lost: Arc<AtomicBool>,
}

impl Lease {
    fn check(&self, projection: &str) -> anyhow::Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            bail!("{projection}: the rebuild lost its lease; it stops without swapping");
        }
        Ok(())
    }

    /// Inside the swap's transaction: fails unless the lease is still ours.
    async fn confirm(&self, tx: &mut Tx, projection: &str) -> anyhow::Result<()> {
        self.check(projection)?;
        if !store::holds_lease(tx, &self.name, &self.owner).await? {
            bail!("{projection}: the rebuild no longer holds its lease; it stops without swapping");
        }
        Ok(())
    }
}

async fn replay_and_swap(
    pool: &Pool,
    source: &dyn EventSource,
    projection: &dyn Projection,
    lease: &Lease,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<u64> {
    let name = projection.name();
    drop_tables(pool, projection, &Tables::REBUILD).await?;
    drop_tables(pool, projection, &Tables::RETIRED).await?;
    projection.create_tables(pool, &Tables::REBUILD).await?;
    store::create_checkpoint(pool, name, &Tables::REBUILD).await?;
    let position = loop {
        lease.check(name)?;
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
    if projection.holds_state_outside_the_log() {
        // The swap locks every live row; a writer that took its rows in another order may
        // deadlock with it, and the database then rolls one of them back: try again.
        let mut attempt = 1;
        while let Err(e) = swap_with_state(pool, projection, lease).await {
            if attempt == SWAP_ATTEMPTS || !is_deadlock(&e) {
                return Err(e.context(format!("{name}: swapping the rebuilt tables in")));
            }
            tracing::warn!(
                projection = name,
                attempt,
                "the swap deadlocked; trying again"
            );
            attempt += 1;
        }
        drop_tables(pool, projection, &Tables::REBUILD).await?;
    } else {
        swap(pool, projection, lease)
            .await
            .with_context(|| format!("{name}: swapping the rebuilt tables in"))?;
        drop_tables(pool, projection, &Tables::RETIRED).await?;
    }
    Ok(position)
}

/// How often a swap that deadlocked is tried.
const SWAP_ATTEMPTS: u32 = 5;

/// Whether `e` is the database rolling the transaction back to end a deadlock (SQLSTATE
/// 40001).
fn is_deadlock(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .and_then(|db| db.code())
            .is_some_and(|code| code == "40001")
    })
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

/// Swaps by renaming: the rebuilt tables take the live names, the live ones retire.
async fn swap(pool: &Pool, projection: &dyn Projection, lease: &Lease) -> anyhow::Result<()> {
    let name = projection.name();
    let live = all_tables(projection, &Tables::LIVE);
    let rebuilt = all_tables(projection, &Tables::REBUILD);
    let retired = all_tables(projection, &Tables::RETIRED);
    let mut tx = pool.begin().await?;
    lease.confirm(&mut tx, name).await?;
    match tx {
        Tx::MySql(_) => {
            // RENAME TABLE commits the transaction first: it swaps right after the check.
            tx.commit().await?;
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
        Tx::Sqlite(_) => {
            for ((live, rebuilt), retired) in live.iter().zip(&rebuilt).zip(&retired) {
                tx.execute(&format!("ALTER TABLE {live} RENAME TO {retired}"))
                    .await?;
                tx.execute(&format!("ALTER TABLE {rebuilt} RENAME TO {live}"))
                    .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Swaps in one transaction that carries the state outside the log over: the lease is
/// confirmed first, then every live row is locked (in the order the follower writes the
/// tables, see [`Projection::tables`]), the state is carried into the rebuilt tables, and the
/// live rows and checkpoint are replaced with the rebuilt ones, column by column name (on
/// SQLite, whose write transaction keeps every other writer out, the tables are renamed
/// instead).
async fn swap_with_state(
    pool: &Pool,
    projection: &dyn Projection,
    lease: &Lease,
) -> anyhow::Result<()> {
    let name = projection.name();
    let live = all_tables(projection, &Tables::LIVE);
    let rebuilt = all_tables(projection, &Tables::REBUILD);
    let retired = all_tables(projection, &Tables::RETIRED);
    let mut tx = pool.begin().await?;
    lease.confirm(&mut tx, name).await?;
    if matches!(tx, Tx::MySql(_)) {
        for table in &live {
            tx.execute(&format!(
                "SELECT COUNT(*) FROM {table} FORCE INDEX (PRIMARY) FOR UPDATE"
            ))
            .await?;
        }
    }
    projection
        .carry_over(&mut tx, &Tables::LIVE, &Tables::REBUILD)
        .await
        .with_context(|| format!("{name}: carrying state over into the rebuilt tables"))?;
    match tx {
        Tx::MySql(_) => {
            for (live, rebuilt) in live.iter().zip(&rebuilt) {
                let columns = tx.columns(rebuilt).await?.join(", ");
                tx.execute(&format!("DELETE FROM {live}")).await?;
                tx.execute(&format!(
                    "INSERT INTO {live} ({columns}) SELECT {columns} FROM {rebuilt}"
                ))
                .await
                .with_context(|| format!("{name}: replacing the rows of {live}"))?;
            }
        }
        Tx::Sqlite(_) => {
            for ((live, rebuilt), retired) in live.iter().zip(&rebuilt).zip(&retired) {
                tx.execute(&format!("ALTER TABLE {live} RENAME TO {retired}"))
                    .await?;
                tx.execute(&format!("ALTER TABLE {rebuilt} RENAME TO {live}"))
                    .await?;
            }
        }
    }
    projection
        .check_swap(&mut tx, &Tables::LIVE)
        .await
        .with_context(|| format!("{name}: checking the swapped tables"))?;
    tx.commit().await?;
    if pool.is_sqlite() {
        drop_tables(pool, projection, &Tables::RETIRED).await?;
    }
    Ok(())
}
