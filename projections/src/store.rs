//! The database as projections use it: pools and transactions on either backend, the
//! per-projection checkpoint, and leases.
//!
//! Each projection's checkpoint is a one-row table of its own, `<name>_checkpoint`, named
//! through [`Tables`] like its read-model tables, so that a rebuild swaps data and checkpoint
//! together in one step.

use std::time::Duration;

use anyhow::Context;
use sqlx::{MySql, MySqlPool, Sqlite, SqlitePool, Transaction};

/// A connection pool on either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    /// MySQL / MariaDB.
    MySql(MySqlPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// An open transaction on either backend.
pub enum Tx {
    /// MySQL / MariaDB.
    MySql(Transaction<'static, MySql>),
    /// SQLite (`BEGIN IMMEDIATE`: it writes).
    Sqlite(Transaction<'static, Sqlite>),
}

impl Pool {
    /// Begins a write transaction.
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Self::MySql(pool) => Tx::MySql(pool.begin().await?),
            Self::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Runs one statement with no parameters outside any transaction (DDL).
    pub async fn execute(&self, sql: &str) -> sqlx::Result<()> {
        match self {
            Self::MySql(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Self::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
    }

    /// Whether MySQL's `table` (in the current database) has an index called `name`.
    pub async fn has_index(&self, table: &str, name: &str) -> sqlx::Result<bool> {
        let sql = "SELECT COUNT(*) FROM information_schema.STATISTICS \
                   WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ?";
        let count: i64 = match self {
            Self::MySql(pool) => {
                sqlx::query_scalar(sql)
                    .bind(table)
                    .bind(name)
                    .fetch_one(pool)
                    .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?")
                    .bind(table)
                    .bind(name)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(count > 0)
    }

    /// Whether this is the SQLite backend.
    pub fn is_sqlite(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> sqlx::Result<()> {
        self.execute("SELECT 1").await
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::MySql(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

impl Tx {
    /// Runs one statement with no parameters inside the transaction; returns the rows it
    /// changed.
    pub async fn execute(&mut self, sql: &str) -> sqlx::Result<u64> {
        Ok(match self {
            Self::MySql(tx) => sqlx::query(sql).execute(&mut **tx).await?.rows_affected(),
            Self::Sqlite(tx) => sqlx::query(sql).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// The column names of `table`, in their order in the table.
    pub async fn columns(&mut self, table: &str) -> sqlx::Result<Vec<String>> {
        match self {
            Self::MySql(tx) => {
                sqlx::query_scalar(
                    "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                )
                .bind(table)
                .fetch_all(&mut **tx)
                .await
            }
            Self::Sqlite(tx) => {
                sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                    .bind(table)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
    }

    /// Commits.
    pub async fn commit(self) -> sqlx::Result<()> {
        match self {
            Self::MySql(tx) => tx.commit().await,
            Self::Sqlite(tx) => tx.commit().await,
        }
    }
}

/// Names a projection's tables: the live set, or a set being rebuilt beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    suffix: &'static str,
}

impl Tables {
    /// The live tables.
    pub const LIVE: Self = Self { suffix: "" };
    /// The tables a rebuild fills before swapping them in.
    pub const REBUILD: Self = Self {
        suffix: "__rebuild",
    };
    /// The live tables just swapped out by a rebuild, about to be dropped.
    pub const RETIRED: Self = Self {
        suffix: "__retired",
    };

    /// The actual name of the table `base`.
    pub fn name(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// The checkpoint table of `projection`.
    pub fn checkpoint(&self, projection: &str) -> String {
        self.name(&format!("{projection}_checkpoint"))
    }
}

/// Creates the checkpoint table of `projection` (at position 0) if it does not exist.
pub async fn create_checkpoint(
    pool: &Pool,
    projection: &str,
    tables: &Tables,
) -> anyhow::Result<()> {
    let table = tables.checkpoint(projection);
    pool.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id INTEGER NOT NULL PRIMARY KEY, position BIGINT NOT NULL)"
    ))
    .await
    .with_context(|| format!("creating {table}"))?;
    // A checkpoint already there stays; nothing else is ignored.
    let insert = if pool.is_sqlite() {
        format!("INSERT INTO {table} (id, position) VALUES (1, 0) ON CONFLICT DO NOTHING")
    } else {
        format!("INSERT INTO {table} (id, position) VALUES (1, 0) ON DUPLICATE KEY UPDATE id = id")
    };
    pool.execute(&insert)
        .await
        .with_context(|| format!("initialising {table}"))?;
    Ok(())
}

/// The position a projection has applied up to.
pub async fn checkpoint(pool: &Pool, projection: &str, tables: &Tables) -> sqlx::Result<u64> {
    let sql = format!(
        "SELECT position FROM {} WHERE id = 1",
        tables.checkpoint(projection)
    );
    let position: i64 = match pool {
        Pool::MySql(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await?,
        Pool::Sqlite(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await?,
    };
    Ok(u64::try_from(position).unwrap_or(0))
}

/// Moves the checkpoint from `from` to `to` inside `tx`; false when it was not at `from`
/// (another runner moved it), in which case the caller must roll back.
pub async fn advance(
    tx: &mut Tx,
    projection: &str,
    tables: &Tables,
    from: u64,
    to: u64,
) -> sqlx::Result<bool> {
    let sql = format!(
        "UPDATE {} SET position = ? WHERE id = 1 AND position = ?",
        tables.checkpoint(projection)
    );
    let (from, to) = (to_i64(from), to_i64(to));
    let moved = match tx {
        Tx::MySql(tx) => sqlx::query(&sql)
            .bind(to)
            .bind(from)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        Tx::Sqlite(tx) => sqlx::query(&sql)
            .bind(to)
            .bind(from)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    };
    Ok(moved == 1)
}

/// The database's clock, in microseconds since the epoch (UTC): the one clock every process
/// agrees on, for leases and claims.
pub async fn database_now(pool: &Pool) -> sqlx::Result<i64> {
    match pool {
        Pool::MySql(pool) => {
            sqlx::query_scalar(
                "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) AS SIGNED)",
            )
            .fetch_one(pool)
            .await
        }
        Pool::Sqlite(pool) => {
            sqlx::query_scalar("SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)")
                .fetch_one(pool)
                .await
        }
    }
}

/// Whether another owner holds the lease `name` and it has not expired, by a plain read.
async fn held_by_another(pool: &Pool, name: &str, owner: &str) -> sqlx::Result<bool> {
    let row: Option<(String, i64)> = match pool {
        Pool::MySql(pool) => {
            sqlx::query_as(
                "SELECT owner, CAST(expires_at > NOW(6) AS SIGNED) FROM projection_leases WHERE name = ?",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        }
        Pool::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT owner, expires_at > CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) \
                 FROM projection_leases WHERE name = ?",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        }
    };
    Ok(row.is_some_and(|(holder, live)| live == 1 && holder != owner))
}

/// Takes or renews the lease `name` for `owner` for `ttl`; true if `owner` holds it now.
/// A lease held by someone else is taken only once it has expired. Time is the database's,
/// so that every process agrees on it.
pub async fn acquire_lease(
    pool: &Pool,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> sqlx::Result<bool> {
    let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
    // A live lease of someone else is only read: a follower that wakes every second writes
    // nothing (on SQLite a write would wait for the single writer; on MySQL lock the row).
    if held_by_another(pool, name, owner).await? {
        return Ok(false);
    }
    match pool {
        Pool::MySql(pool) => {
            sqlx::query(
                "INSERT INTO projection_leases (name, owner, expires_at) \
                 VALUES (?, ?, NOW(6) + INTERVAL ? MICROSECOND) \
                 ON DUPLICATE KEY UPDATE \
                   owner = IF(expires_at < NOW(6) OR owner = VALUES(owner), VALUES(owner), owner), \
                   expires_at = IF(owner = VALUES(owner), VALUES(expires_at), expires_at)",
            )
            .bind(name)
            .bind(owner)
            .bind(ttl_us)
            .execute(pool)
            .await?;
            let holder: String =
                sqlx::query_scalar("SELECT owner FROM projection_leases WHERE name = ?")
                    .bind(name)
                    .fetch_one(pool)
                    .await?;
            Ok(holder == owner)
        }
        Pool::Sqlite(pool) => {
            // Times are microseconds since the epoch, from SQLite's own clock.
            let now = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)";
            let sql = format!(
                "INSERT INTO projection_leases (name, owner, expires_at) VALUES (?1, ?2, {now} + ?3) \
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE projection_leases.owner = excluded.owner OR projection_leases.expires_at < {now}"
            );
            let taken = sqlx::query(&sql)
                .bind(name)
                .bind(owner)
                .bind(ttl_us)
                .execute(pool)
                .await?;
            Ok(taken.rows_affected() == 1)
        }
    }
}

/// Whether `owner` holds the lease `name` and it has not expired, read inside `tx`. On MySQL
/// the lease row stays locked until `tx` ends, so that nobody takes the lease over meanwhile;
/// on SQLite the write transaction already keeps every other writer out.
pub async fn holds_lease(tx: &mut Tx, name: &str, owner: &str) -> sqlx::Result<bool> {
    let held: Option<i64> = match tx {
        Tx::MySql(tx) => {
            sqlx::query_scalar(
                "SELECT CAST(owner = ? AND expires_at > NOW(6) AS SIGNED) FROM projection_leases \
                 WHERE name = ? FOR UPDATE",
            )
            .bind(owner)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
        }
        Tx::Sqlite(tx) => {
            sqlx::query_scalar(
                "SELECT owner = ? AND expires_at > CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) \
                 FROM projection_leases WHERE name = ?",
            )
            .bind(owner)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    Ok(held == Some(1))
}

/// Gives the lease up at once, if `owner` holds it.
pub async fn release_lease(pool: &Pool, name: &str, owner: &str) -> sqlx::Result<()> {
    let sql = "DELETE FROM projection_leases WHERE name = ? AND owner = ?";
    match pool {
        Pool::MySql(pool) => sqlx::query(sql)
            .bind(name)
            .bind(owner)
            .execute(pool)
            .await
            .map(drop),
        Pool::Sqlite(pool) => sqlx::query(sql)
            .bind(name)
            .bind(owner)
            .execute(pool)
            .await
            .map(drop),
    }
}

/// Positions are stored signed; they never reach 2^63.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The end of an `INSERT` that leaves a row already there as it is (and refuses anything
/// else): `column` names a key column of the table written, qualified where an `INSERT ...
/// SELECT` makes it ambiguous; `sqlite` names the backend.
pub(crate) fn keep_existing(sqlite: bool, column: &str) -> String {
    if sqlite {
        "ON CONFLICT DO NOTHING".to_owned()
    } else {
        format!("ON DUPLICATE KEY UPDATE {column} = {column}")
    }
}

/// A value bound to a statement of [`run`].
pub(crate) enum Arg {
    /// Text.
    S(String),
    /// Text or NULL.
    O(Option<String>),
    /// An integer.
    I(i64),
}

/// Runs `sql` with `args` bound in order, inside `tx`.
pub(crate) async fn run(tx: &mut Tx, sql: &str, args: &[Arg]) -> sqlx::Result<()> {
    macro_rules! bind_all {
        ($query:expr) => {{
            let mut query = $query;
            for arg in args {
                query = match arg {
                    Arg::S(s) => query.bind(s.as_str()),
                    Arg::O(s) => query.bind(s.as_deref()),
                    Arg::I(i) => query.bind(*i),
                };
            }
            query
        }};
    }
    match tx {
        Tx::MySql(tx) => bind_all!(sqlx::query(sql))
            .execute(&mut **tx)
            .await
            .map(drop),
        Tx::Sqlite(tx) => bind_all!(sqlx::query(sql))
            .execute(&mut **tx)
            .await
            .map(drop),
    }
}

/// Rows of one multi-row statement at most.
const ROWS_PER_INSERT: usize = 200;

/// Statements of a batch, with the single-row `INSERT`s of each statement sent together as
/// multi-row ones: a drop's thousands of orders are a few statements instead of one round
/// trip each. The inserts of different statements must not depend on each other (they may
/// go out in another order); any other statement ([`Writer::run`], [`Writer::text`]) sends
/// every pending row first, so its effect is that of each write in order.
pub(crate) struct Writer<'a> {
    tx: &'a mut Tx,
    /// What a projection looked up during the batch (a product's seller).
    pub(crate) known: std::collections::HashMap<String, Option<String>>,
    pending: Vec<Pending>,
}

/// The rows of one statement: `{head} {row}, {row}, ... {tail}`.
struct Pending {
    head: String,
    row: String,
    tail: String,
    rows: usize,
    args: Vec<Arg>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(tx: &'a mut Tx) -> Self {
        Self {
            tx,
            known: std::collections::HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Whether the transaction is SQLite's.
    pub(crate) fn sqlite(&self) -> bool {
        matches!(self.tx, Tx::Sqlite(_))
    }

    /// `{head} {row} {tail}` with `args`, joined to the pending rows of the same statement.
    pub(crate) async fn insert(
        &mut self,
        head: &str,
        row: &str,
        tail: &str,
        args: Vec<Arg>,
    ) -> sqlx::Result<()> {
        let at = self
            .pending
            .iter()
            .position(|p| p.head == head && p.row == row && p.tail == tail);
        let at = match at {
            Some(at) if self.pending[at].rows >= ROWS_PER_INSERT => {
                let full = self.pending.remove(at);
                send(self.tx, full).await?;
                None
            }
            at => at,
        };
        let at = at.unwrap_or_else(|| {
            self.pending.push(Pending {
                head: head.to_owned(),
                row: row.to_owned(),
                tail: tail.to_owned(),
                rows: 0,
                args: Vec::new(),
            });
            self.pending.len() - 1
        });
        let pending = &mut self.pending[at];
        pending.rows += 1;
        pending.args.extend(args);
        Ok(())
    }

    /// Any other statement, after the pending rows.
    pub(crate) async fn run(&mut self, sql: &str, args: &[Arg]) -> sqlx::Result<()> {
        self.flush().await?;
        run(self.tx, sql, args).await
    }

    /// One text column of the first row `sql` selects with `args`, after the pending rows.
    pub(crate) async fn text(&mut self, sql: &str, args: &[Arg]) -> sqlx::Result<Option<String>> {
        self.flush().await?;
        macro_rules! fetch {
            ($tx:expr) => {{
                let mut query = sqlx::query_scalar(sql);
                for arg in args {
                    query = match arg {
                        Arg::S(s) => query.bind(s.as_str()),
                        Arg::O(s) => query.bind(s.as_deref()),
                        Arg::I(i) => query.bind(*i),
                    };
                }
                query.fetch_optional(&mut **$tx).await
            }};
        }
        match self.tx {
            Tx::MySql(tx) => fetch!(tx),
            Tx::Sqlite(tx) => fetch!(tx),
        }
    }

    /// Sends every pending row, in the order their statements first came.
    pub(crate) async fn flush(&mut self) -> sqlx::Result<()> {
        for pending in std::mem::take(&mut self.pending) {
            send(self.tx, pending).await?;
        }
        Ok(())
    }
}

async fn send(tx: &mut Tx, p: Pending) -> sqlx::Result<()> {
    let rows = vec![p.row.as_str(); p.rows].join(", ");
    run(tx, &format!("{} {rows} {}", p.head, p.tail), &p.args).await
}
