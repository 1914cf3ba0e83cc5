//! The durable schedule: timed transitions, filled from events.
//!
//! One row per transition, keyed by what it is (`order/<id>/ship`,
//! `product/<id>/<schedule id>`), due at an instant, in one of the statuses `pending`,
//! `claimed` (a scheduler is firing it), `done` or `cancelled`. This projection writes the
//! rows and closes those the log says are no longer needed; the scheduler of the service
//! claims and fires due rows and records the outcome. Instants are microseconds since the
//! Unix epoch on both backends.
//!
//! | event | schedule |
//! |---|---|
//! | `StatusChangeScheduled` | `product_status` at its `due_at` |
//! | `ScheduledStatusChangeCancelled` | that row cancelled |
//! | `ProductStatusChanged` by a schedule, `ScheduledStatusChangeSkipped` | that row done |
//! | `OrderPlaced` | `order_ship` at placed + `ship_after` |
//! | `OrderShipped` | ship done; `order_deliver` at shipped + `deliver_after` |
//! | `OrderDelivered` | deliver done |
//! | `OrderCancelled` | ship cancelled |
//! | `ReturnRequested` | `order_pickup` at requested + `return_pickup_after` |
//! | `ReturnPickedUp` | pick-up done; `order_complete_return` at picked up + `return_complete_after` |
//! | `ReturnCompleted` | complete-return done |
//!
//! The order's durations come from the policy recorded in its `OrderPlaced`, kept in the
//! side table `schedule_order_policy`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use openrun_domain::order::OrderEvent;
use openrun_domain::product::ProductEvent;

use crate::log::RecordedEvent;
use crate::store::{Arg, Pool, Tables, Tx, Writer, keep_existing};
use crate::{Projection, Written, write_all};

/// The schedule table.
pub const TABLE: &str = "schedule";
/// Each order's durations, from its `OrderPlaced`.
pub const POLICY_TABLE: &str = "schedule_order_policy";

/// What a schedule row does when it fires; stored as its [`Kind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Fire a product's scheduled status change.
    ProductStatus,
    /// `prepared` -> `in_delivery`.
    OrderShip,
    /// `in_delivery` -> `delivered`.
    OrderDeliver,
    /// `return_requested` -> `in_return`.
    OrderPickup,
    /// `in_return` -> `return_completed`, with the refund.
    OrderCompleteReturn,
    /// The nightly self-audit. Nightly rows are put in the schedule by the scheduler, not by
    /// events: `nightly/<local date>/<job>`.
    NightlyAudit,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::ProductStatus,
        Self::OrderShip,
        Self::OrderDeliver,
        Self::OrderPickup,
        Self::OrderCompleteReturn,
        Self::NightlyAudit,
    ];

    /// The name stored in the `kind` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ProductStatus => "product_status",
            Self::OrderShip => "order_ship",
            Self::OrderDeliver => "order_deliver",
            Self::OrderPickup => "order_pickup",
            Self::OrderCompleteReturn => "order_complete_return",
            Self::NightlyAudit => "nightly_audit",
        }
    }

    /// The kind a stored name stands for; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The `schedule` projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Schedule;

/// Microseconds since the Unix epoch.
pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

enum Write<'a> {
    Add {
        id: String,
        kind: &'a str,
        stream_id: &'a str,
        schedule_id: Option<String>,
        due: i64,
    },
    Close {
        id: String,
        status: &'static str,
        at: i64,
    },
    Policy {
        order_id: &'a str,
        deliver: i64,
        pickup: i64,
        complete: i64,
    },
    /// Add a row due `field` seconds (from the order's policy) after `at`.
    AddAfter {
        id: String,
        kind: &'a str,
        order_id: &'a str,
        field: &'static str,
        at: i64,
    },
}

/// The product events this projection reads; others are not even parsed.
const PRODUCT_EVENTS: &[&str] = &[
    "StatusChangeScheduled",
    "ScheduledStatusChangeCancelled",
    "ProductStatusChanged",
    "ScheduledStatusChangeSkipped",
];

/// The order events this projection reads.
const ORDER_EVENTS: &[&str] = &[
    "OrderPlaced",
    "OrderShipped",
    "OrderDelivered",
    "OrderCancelled",
    "ReturnRequested",
    "ReturnPickedUp",
    "ReturnCompleted",
];

/// The event as `T` when its type is one of `handled`. A handled event that does not parse
/// is an error, not a skip: skipping it would lose a transition for good, while an error
/// stops the projection there until a fixed build reads it.
fn parse<T: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
    handled: &[&str],
) -> anyhow::Result<Option<T>> {
    if !handled.contains(&event.event_type.as_str()) {
        return Ok(None);
    }
    serde_json::from_value(event.payload.clone())
        .map(Some)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} at position {} does not parse: {e}",
                event.event_type,
                event.global_position
            )
        })
}

fn writes(event: &RecordedEvent) -> anyhow::Result<Vec<Write<'_>>> {
    let id = event.stream_id.as_str();
    let order = |step: &str| format!("order/{id}/{step}");
    Ok(match event.stream_type.as_str() {
        "product" => match parse::<ProductEvent>(event, PRODUCT_EVENTS)? {
            Some(ProductEvent::StatusChangeScheduled {
                schedule_id,
                due_at,
                ..
            }) => vec![Write::Add {
                id: format!("product/{id}/{schedule_id}"),
                kind: Kind::ProductStatus.as_str(),
                stream_id: id,
                schedule_id: Some(schedule_id.to_string()),
                due: micros(due_at),
            }],
            Some(ProductEvent::ScheduledStatusChangeCancelled { schedule_id, .. }) => {
                vec![Write::Close {
                    id: format!("product/{id}/{schedule_id}"),
                    status: "cancelled",
                    at: micros(event.recorded_at),
                }]
            }
            Some(ProductEvent::ProductStatusChanged {
                schedule_id: Some(schedule_id),
                at,
                ..
            })
            | Some(ProductEvent::ScheduledStatusChangeSkipped {
                schedule_id, at, ..
            }) => {
                vec![Write::Close {
                    id: format!("product/{id}/{schedule_id}"),
                    status: "done",
                    at: micros(at),
                }]
            }
            // Other product events schedule nothing.
            _ => vec![],
        },
        "order" => match parse::<OrderEvent>(event, ORDER_EVENTS)? {
            Some(OrderEvent::OrderPlaced { policy, at, .. }) => {
                let secs = |d: chrono::Duration| d.num_seconds();
                vec![
                    Write::Policy {
                        order_id: id,
                        deliver: secs(policy.deliver_after),
                        pickup: secs(policy.return_pickup_after),
                        complete: secs(policy.return_complete_after),
                    },
                    Write::Add {
                        id: order("ship"),
                        kind: Kind::OrderShip.as_str(),
                        stream_id: id,
                        schedule_id: None,
                        due: micros(at + policy.ship_after),
                    },
                ]
            }
            Some(OrderEvent::OrderShipped { at }) => vec![
                Write::Close {
                    id: order("ship"),
                    status: "done",
                    at: micros(at),
                },
                Write::AddAfter {
                    id: order("deliver"),
                    kind: Kind::OrderDeliver.as_str(),
                    order_id: id,
                    field: "deliver_after_secs",
                    at: micros(at),
                },
            ],
            Some(OrderEvent::OrderDelivered { at }) => vec![Write::Close {
                id: order("deliver"),
                status: "done",
                at: micros(at),
            }],
            Some(OrderEvent::OrderCancelled { at, .. }) => vec![Write::Close {
                id: order("ship"),
                status: "cancelled",
                at: micros(at),
            }],
            Some(OrderEvent::ReturnRequested { at, .. }) => vec![Write::AddAfter {
                id: order("pickup"),
                kind: Kind::OrderPickup.as_str(),
                order_id: id,
                field: "return_pickup_after_secs",
                at: micros(at),
            }],
            Some(OrderEvent::ReturnPickedUp { at }) => vec![
                Write::Close {
                    id: order("pickup"),
                    status: "done",
                    at: micros(at),
                },
                Write::AddAfter {
                    id: order("complete_return"),
                    kind: Kind::OrderCompleteReturn.as_str(),
                    order_id: id,
                    field: "return_complete_after_secs",
                    at: micros(at),
                },
            ],
            Some(OrderEvent::ReturnCompleted { at, .. }) => {
                vec![Write::Close {
                    id: order("complete_return"),
                    status: "done",
                    at: micros(at),
                }]
            }
            _ => vec![],
        },
        _ => vec![],
    })
}

#[async_trait]
impl Projection for Schedule {
    fn name(&self) -> &'static str {
        "schedule"
    }

    fn tables(&self) -> &'static [&'static str] {
        // The follower writes an order's policy row before its first schedule row.
        &[POLICY_TABLE, TABLE]
    }

    async fn create_tables(&self, pool: &Pool, tables: &Tables) -> anyhow::Result<()> {
        let (schedule, policy) = (tables.name(TABLE), tables.name(POLICY_TABLE));
        // Keys compare byte for byte, as the log's stream ids do: `order/A` and `order/a` are
        // two rows. MySQL reports binary collations as binary columns: readers select them
        // with `CAST(... AS CHAR)`.
        let key = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin"
        };
        let short = if pool.is_sqlite() {
            "TEXT"
        } else {
            "VARCHAR(64)"
        };
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schedule} (
                id {key} NOT NULL PRIMARY KEY,
                kind {short} NOT NULL,
                stream_id {key} NOT NULL,
                schedule_id {short},
                due_at BIGINT NOT NULL,
                status {short} NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                claimed_by {short},
                last_error TEXT,
                closed_at BIGINT,
                UNIQUE (status, next_attempt_at, id)
            )"
        ))
        .await?;
        // The scheduler asks for rows due now: by due time, so that a drop's thousands of
        // rows due tomorrow are never scanned (tables made before this index get it here).
        if pool.is_sqlite() {
            pool.execute(&format!(
                "CREATE INDEX IF NOT EXISTS {schedule}_due ON {schedule} (due_at)"
            ))
            .await?;
        } else if !pool.has_index(&schedule, "due").await? {
            // Two processes starting together may both add it: the second is told it exists
            // (ER_DUP_KEYNAME).
            const DUPLICATE_KEY_NAME: u16 = 1061;
            match pool
                .execute(&format!("CREATE INDEX due ON {schedule} (due_at)"))
                .await
            {
                Err(sqlx::Error::Database(e))
                    if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|e| e.number() == DUPLICATE_KEY_NAME) => {}
                other => other?,
            }
        }
        pool.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {policy} (
                order_id {key} NOT NULL PRIMARY KEY,
                deliver_after_secs BIGINT NOT NULL,
                return_pickup_after_secs BIGINT NOT NULL,
                return_complete_after_secs BIGINT NOT NULL
            )"
        ))
        .await?;
        Ok(())
    }

    fn holds_state_outside_the_log(&self) -> bool {
        true
    }

    /// The scheduler's progress is not in the log: rows it closed without an event (a step
    /// the domain refused), its claims, attempts, backoff and last errors, and the nightly
    /// rows it plans. Rows only `from` has are copied, rows the log leaves pending take the
    /// scheduler's columns from `from`, and rows the log closed keep their attempts and last
    /// error. Runs inside the swap, with `from` locked.
    async fn carry_over(&self, tx: &mut Tx, from: &Tables, into: &Tables) -> anyhow::Result<()> {
        let sqlite = matches!(tx, Tx::Sqlite(_));
        let (from, into) = (from.name(TABLE), into.name(TABLE));
        const COLUMNS: &str = "id, kind, stream_id, schedule_id, due_at, status, next_attempt_at, \
                               attempts, claimed_by, last_error, closed_at";
        // Rows already there stay; a data error is an error (no INSERT IGNORE, which would turn
        // it into a warning and a lost row).
        let keep = keep_existing(sqlite, &format!("{into}.id"));
        tx.execute(&format!(
            "INSERT INTO {into} ({COLUMNS}) SELECT {COLUMNS} FROM {from} WHERE 1 = 1 {keep}"
        ))
        .await?;
        let copy = [
            "status",
            "next_attempt_at",
            "attempts",
            "claimed_by",
            "last_error",
            "closed_at",
        ];
        let update = if sqlite {
            let set: Vec<String> = copy.iter().map(|c| format!("{c} = f.{c}")).collect();
            format!(
                "UPDATE {into} SET {} FROM {from} AS f WHERE {into}.id = f.id AND \
                 {into}.status = 'pending' AND (f.status <> 'pending' OR f.attempts <> {into}.attempts)",
                set.join(", ")
            )
        } else {
            let set: Vec<String> = copy.iter().map(|c| format!("i.{c} = f.{c}")).collect();
            format!(
                "UPDATE {into} AS i JOIN {from} AS f ON i.id = f.id SET {} \
                 WHERE i.status = 'pending' AND (f.status <> 'pending' OR f.attempts <> i.attempts)",
                set.join(", ")
            )
        };
        tx.execute(&update).await?;
        // Rows the log closed keep how often the scheduler tried them and its last error.
        let tried = if sqlite {
            format!(
                "UPDATE {into} SET attempts = f.attempts, last_error = f.last_error FROM {from} AS f \
                 WHERE {into}.id = f.id AND {into}.status <> 'pending'"
            )
        } else {
            format!(
                "UPDATE {into} AS i JOIN {from} AS f ON i.id = f.id \
                 SET i.attempts = f.attempts, i.last_error = f.last_error WHERE i.status <> 'pending'"
            )
        };
        tx.execute(&tried).await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()> {
        write_all(self, tx, tables, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut Tx,
        tables: &Tables,
        events: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        write_all(self, tx, tables, events).await
    }
}

#[async_trait]
impl Written for Schedule {
    async fn write(
        &self,
        w: &mut Writer<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> anyhow::Result<()> {
        let (schedule, policy) = (tables.name(TABLE), tables.name(POLICY_TABLE));
        // A row that exists stays; any other refusal is an error, not a warning.
        let sqlite = w.sqlite();
        let keep = |column: &str| keep_existing(sqlite, column);
        for write in writes(event)? {
            match write {
                Write::Add {
                    id,
                    kind,
                    stream_id,
                    schedule_id,
                    due,
                } => {
                    let head = format!(
                        "INSERT INTO {schedule} (id, kind, stream_id, schedule_id, due_at, status, next_attempt_at) VALUES"
                    );
                    w.insert(
                        &head,
                        "(?, ?, ?, ?, ?, 'pending', ?)",
                        &keep("id"),
                        vec![
                            Arg::S(id),
                            Arg::S(kind.into()),
                            Arg::S(stream_id.into()),
                            Arg::O(schedule_id),
                            Arg::I(due),
                            Arg::I(due),
                        ],
                    )
                    .await?;
                }
                Write::AddAfter {
                    id,
                    kind,
                    order_id,
                    field,
                    at,
                } => {
                    let sql = format!(
                        "INSERT INTO {schedule} (id, kind, stream_id, schedule_id, due_at, status, next_attempt_at) \
                         SELECT ?, ?, order_id, NULL, ? + {field} * 1000000, 'pending', ? + {field} * 1000000 \
                         FROM {policy} WHERE order_id = ? {}",
                        keep(&format!("{schedule}.id"))
                    );
                    w.run(
                        &sql,
                        &[
                            Arg::S(id),
                            Arg::S(kind.into()),
                            Arg::I(at),
                            Arg::I(at),
                            Arg::S(order_id.into()),
                        ],
                    )
                    .await?;
                }
                Write::Close { id, status, at } => {
                    let sql = format!(
                        "UPDATE {schedule} SET status = ?, closed_at = ?, claimed_by = NULL \
                         WHERE id = ? AND status IN ('pending', 'claimed')"
                    );
                    w.run(&sql, &[Arg::S(status.into()), Arg::I(at), Arg::S(id)])
                        .await?;
                }
                Write::Policy {
                    order_id,
                    deliver,
                    pickup,
                    complete,
                } => {
                    let head = format!(
                        "INSERT INTO {policy} (order_id, deliver_after_secs, return_pickup_after_secs, \
                         return_complete_after_secs) VALUES"
                    );
                    w.insert(
                        &head,
                        "(?, ?, ?, ?)",
                        &keep("order_id"),
                        vec![
                            Arg::S(order_id.into()),
                            Arg::I(deliver),
                            Arg::I(pickup),
                            Arg::I(complete),
                        ],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn every_kind_round_trips_through_its_stored_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("order_teleport"), None);
    }
}
