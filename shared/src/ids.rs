//! Typed identifiers. Each wraps a UUID so that a node id can never be passed where a task id is
//! expected; all of them serialise as a plain UUID string.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) identifier.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(value: Uuid) -> Self {
                Self(value)
            }
        }
    };
}

uuid_id!(
    /// A member organisation of the cooperative.
    OrganizationId
);
uuid_id!(
    /// A computer (usually a Raspberry Pi) that runs tasks.
    NodeId
);
uuid_id!(
    /// A unit of batch work submitted by an organisation.
    TaskId
);
uuid_id!(
    /// The id of any message envelope (command, report, event, node message).
    MessageId
);
uuid_id!(
    /// A data owner (a co-owner in a copropriété) whose consent governs the use of their readings.
    OwnerId
);
uuid_id!(
    /// A copropriété (a building's co-ownership), the tenant inside an organisation.
    CoproprieteId
);
uuid_id!(
    /// A building whose energy is simulated or optimised.
    BuildingId
);
