//! The order status and its graph.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed and paid, being prepared for shipping.
    Prepared,
    /// Shipped.
    InDelivery,
    /// Delivered to the buyer.
    Delivered,
    /// Cancelled before shipping; refunded, stock released. Final.
    Cancelled,
    /// The buyer asked to return it.
    ReturnRequested,
    /// The goods were picked up.
    InReturn,
    /// The goods came back; refunded, stock restored. Final.
    ReturnCompleted,
}

impl OrderStatus {
    /// Every edge of the order graph.
    pub const EDGES: [(Self, Self); 6] = [
        (Self::Prepared, Self::InDelivery),
        (Self::Prepared, Self::Cancelled),
        (Self::InDelivery, Self::Delivered),
        (Self::Delivered, Self::ReturnRequested),
        (Self::ReturnRequested, Self::InReturn),
        (Self::InReturn, Self::ReturnCompleted),
    ];

    /// Whether the graph has the edge `self -> to`.
    pub fn can_move_to(self, to: Self) -> bool {
        Self::EDGES.contains(&(self, to))
    }

    /// The status's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::InDelivery => "in_delivery",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
            Self::ReturnRequested => "return_requested",
            Self::InReturn => "in_return",
            Self::ReturnCompleted => "return_completed",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The automatic steps, sent by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoStep {
    /// `prepared` -> `in_delivery`, `ship_after` after placing.
    Ship,
    /// `in_delivery` -> `delivered`, `deliver_after` after shipping.
    Deliver,
    /// `return_requested` -> `in_return`, `return_pickup_after` after the request.
    PickUpReturn,
    /// `in_return` -> `return_completed`, `return_complete_after` after pick-up.
    CompleteReturn,
}

impl AutoStep {
    /// The status the step leaves and the status it reaches.
    pub const fn edge(self) -> (OrderStatus, OrderStatus) {
        match self {
            Self::Ship => (OrderStatus::Prepared, OrderStatus::InDelivery),
            Self::Deliver => (OrderStatus::InDelivery, OrderStatus::Delivered),
            Self::PickUpReturn => (OrderStatus::ReturnRequested, OrderStatus::InReturn),
            Self::CompleteReturn => (OrderStatus::InReturn, OrderStatus::ReturnCompleted),
        }
    }
}

impl fmt::Display for AutoStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ship => "ship",
            Self::Deliver => "deliver",
            Self::PickUpReturn => "pick_up_return",
            Self::CompleteReturn => "complete_return",
        })
    }
}
