//! Firing a claimed row: its command through the command path, and what the outcome means.

use super::*;

/// Fires one claimed row.
pub(super) async fn fire(jobs: &Jobs, due: &Due) -> Outcome {
    // Counts executions (not outcomes): a row fired twice shows here twice.
    metrics::counter!("openrun_schedule_fired_total", "kind" => due.kind.clone()).increment(1);
    let commands = &jobs.commands;
    let metadata = Metadata {
        actor: Some("system:scheduler".to_owned()),
        causation_id: Some(uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            due.id.as_bytes(),
        )),
        ..Metadata::default()
    };
    let issuer = Issuer::System;
    let Some(kind) = Kind::parse(&due.kind) else {
        return Outcome::Done(Some(format!("unknown schedule kind {}", due.kind)));
    };
    let order_step = |command| {
        let metadata = metadata.clone();
        async move { classify_order(commands.order(&due.stream_id, command, metadata).await) }
    };
    let result = match kind {
        Kind::ProductStatus => {
            let Some(schedule_id) = due
                .schedule_id
                .as_deref()
                .and_then(|s| s.parse().ok())
                .map(ScheduleId::from_uuid)
            else {
                return Outcome::Done(Some("the row names no schedule".into()));
            };
            let command = ProductCommand::FireScheduledStatusChange {
                issuer,
                schedule_id,
            };
            classify_product(
                commands
                    .product(&due.stream_id, command, metadata.clone())
                    .await,
            )
        }
        Kind::NightlyAudit => nightly_audit(jobs).await,
        Kind::OrderShip => order_step(OrderCommand::MarkInDelivery { issuer }).await,
        Kind::OrderDeliver => order_step(OrderCommand::MarkDelivered { issuer }).await,
        Kind::OrderPickup => order_step(OrderCommand::MarkInReturn { issuer }).await,
        Kind::OrderCompleteReturn => order_step(OrderCommand::CompleteReturn { issuer }).await,
    };
    match result {
        Ok(note) => Outcome::Done(note),
        Err(error) => Outcome::Retry { error },
    }
}

/// A refusal by the domain is final (the step no longer applies); only failures on the way
/// (database, conflicts that did not settle) are retried.
pub(super) fn classify_product<T>(
    result: Result<T, CommandError<ProductError>>,
) -> Result<Option<String>, String> {
    match result {
        Ok(_) => Ok(None),
        Err(CommandError::Rejected(ProductError::ScheduleNotDue { .. })) => {
            Err("not due yet".into())
        }
        Err(CommandError::Rejected(e)) => Ok(Some(format!("not applicable: {e}"))),
        // Also a lost commit: firing again is harmless, as a step that happened is a no-op.
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn classify_order<T>(
    result: Result<T, CommandError<OrderError>>,
) -> Result<Option<String>, String> {
    match result {
        Ok(_) => Ok(None),
        Err(CommandError::Rejected(OrderError::NotDue { .. })) => Err("not due yet".into()),
        Err(CommandError::Rejected(e)) => Ok(Some(format!("not applicable: {e}"))),
        Err(e) => Err(e.to_string()),
    }
}
