//! Who issued a command, and the ownership rules shared by the aggregates.
//!
//! Every member command carries an [`Actor`] built by the service from the verified access
//! token, never from a request body. Automatic steps (shipping, scheduled status changes...)
//! carry an [`Issuer`], which is normally [`Issuer::System`] (the scheduler); an admin may
//! send them by hand, for example while the scheduler is down, under the same timing rules.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::MemberId;

/// A member's role. Roles only grow: sign-up gives `unverified`, e-mail verification gives
/// `basic`, an admin grants `seller` or `admin`. Ordered: each role may do what the roles
/// before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Signed up, e-mail not verified yet: may not buy or sell.
    Unverified,
    /// A verified member: may buy.
    Basic,
    /// May buy, and sell their own products.
    Seller,
    /// May buy, and manage every product and order.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Self::Unverified, Self::Basic, Self::Seller, Self::Admin];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "unverified",
            Self::Basic => "basic",
            Self::Seller => "seller",
            Self::Admin => "admin",
        }
    }

    /// Whether a member with this role may place orders.
    pub const fn can_buy(self) -> bool {
        !matches!(self, Self::Unverified)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated member issuing a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The member.
    pub member_id: MemberId,
    /// The member's role, as stated by the access token.
    pub role: Role,
}

impl Actor {
    /// An actor.
    pub const fn new(member_id: MemberId, role: Role) -> Self {
        Self { member_id, role }
    }

    /// Whether the actor is an admin.
    pub const fn is_admin(&self) -> bool {
        matches!(self.role, Role::Admin)
    }

    /// Allows the owning seller of a resource, or any admin.
    ///
    /// # Errors
    /// [`Denied::NotOwner`] for a seller acting on someone else's resource,
    /// [`Denied::RoleNotAllowed`] for a member who is neither seller nor admin (even on a
    /// resource they once created: a seller who lost the role loses the rights).
    pub fn owner_or_admin(&self, owner: MemberId) -> Result<(), Denied> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Seller if self.member_id == owner => Ok(()),
            Role::Seller => Err(Denied::NotOwner),
            role => Err(Denied::RoleNotAllowed { role }),
        }
    }
}

/// Who sent an automatic-step command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Issuer {
    /// The service's scheduler.
    System,
    /// A member; only admins are allowed to send automatic steps.
    Member(Actor),
}

impl Issuer {
    /// Allows the system or an admin.
    ///
    /// # Errors
    /// [`Denied::RoleNotAllowed`] for any non-admin member.
    pub fn system_or_admin(&self) -> Result<(), Denied> {
        match self {
            Self::System => Ok(()),
            Self::Member(actor) if actor.is_admin() => Ok(()),
            Self::Member(actor) => Err(Denied::RoleNotAllowed { role: actor.role }),
        }
    }
}

/// Why an actor may not act; each aggregate error converts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The actor's role does not allow the command at all.
    RoleNotAllowed {
        /// The actor's role.
        role: Role,
    },
    /// The actor is a seller, but not the owner.
    NotOwner,
}
