//! Unbound DECT handsets. A handset that subscribes without a user gets a temporary number at
//! once (an OMM user tagged as temporary and a PBX user in a restricted context). When it dials
//! the token of a DECT extension, the webhook validates the call synchronously and answers one
//! word; the handset is moved after a delay, the temporary users are deleted, and GURU3 learns
//! of the handset through a durable `ASSIGN_HANDSET` outbox. Handsets GURU3 already knows go
//! straight back to their extension.
//!
//! It sees the OMM, the PBX and GURU3 only through `broker_core::ports`, and does no I/O.
#![warn(missing_docs)]

mod engine;
pub mod temp;
pub mod webhook;

pub use engine::{Config, Ports, Status, Unbound};
pub use temp::{Blocklist, TempNumbers};
pub use webhook::{Reply, TokenCall};
