//! Unbound DECT handsets. A handset that subscribes without a user gets a temporary number at
//! once (an OMM user tagged as temporary and a PBX user in a restricted context). When it dials
//! the token of a DECT extension, the webhook validates the call synchronously and answers one
//! word; the handset is moved after a delay, the temporary users are deleted, and GURU3 learns
//! of the handset through a durable `ASSIGN_HANDSET` outbox. Handsets GURU3 already knows go
//! straight back to their extension.
//!
//! It sees the PBX and the clock through `broker_core::ports` and the OMM's handsets, its
//! durable state and GURU3's outbox receiver through its own [`ports`]; it does no I/O. The
//! `fakes` feature has in-memory models of its ports.
#![warn(missing_docs)]

mod engine;
#[cfg(feature = "fakes")]
pub mod fakes;
pub mod ports;
pub mod temp;
pub mod webhook;

pub use engine::{ACTIVITY, Activity, Config, Status, Unbound, WorkflowPorts};
pub use temp::{Blocklist, TempNumbers};
pub use webhook::{Reply, TokenCall};
