//! The product lifecycle status and its transition table.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a product is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// A draft: hidden, not buyable. Every product starts here.
    NotPublished,
    /// Announced: visible, not buyable yet.
    Waiting,
    /// Visible and buyable.
    OnSale,
    /// The sale is over: visible, not buyable.
    Ended,
    /// Taken down: hidden, not buyable. Remembers the status to resume to.
    Suspended,
}

impl ProductStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 5] = [
        Self::NotPublished,
        Self::Waiting,
        Self::OnSale,
        Self::Ended,
        Self::Suspended,
    ];

    /// The status's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotPublished => "not_published",
            Self::Waiting => "waiting",
            Self::OnSale => "on_sale",
            Self::Ended => "ended",
            Self::Suspended => "suspended",
        }
    }

    /// Whether the catalog shows a product in this status (deleted products never show).
    pub const fn is_visible(self) -> bool {
        matches!(self, Self::Waiting | Self::OnSale | Self::Ended)
    }

    /// Whether a product in this status can be ordered (deleted products never can).
    pub const fn is_buyable(self) -> bool {
        matches!(self, Self::OnSale)
    }

    /// Whether the lifecycle graph has the edge `self -> to`. Leaving `suspended` is not an
    /// edge of the graph: it resumes the status held before the suspension, which only the
    /// product's state knows (see [`super::ProductState::check_transition`]).
    pub const fn has_edge_to(self, to: Self) -> bool {
        use ProductStatus::{Ended, NotPublished, OnSale, Suspended, Waiting};
        matches!(
            (self, to),
            (NotPublished, Waiting | OnSale)
                | (Waiting, NotPublished | OnSale)
                | (OnSale, Ended)
                | (Ended, Waiting | OnSale)
                | (NotPublished | Waiting | OnSale | Ended, Suspended)
        )
    }
}

impl fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
