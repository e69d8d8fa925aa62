//! hexidian's broker core: the domain (extensions, handsets, call groups), the **ports**
//! through which it sees GURU3, the OMM, Asterisk and its own durable state, the handlers
//! for every GURU3 message type and the delivery loop. It does no I/O and knows no protocol:
//! the binary wires adapters for the real systems; the `fakes` feature has in-memory models
//! of every port.
//!
//! Delivery rules (see `ARCHITECTURE.md`): messages are processed in GURU3 order; all PBX
//! changes of a run of messages go into one transaction, OMM operations run concurrently per
//! extension (in order within one); a message is acked only after every target applied it;
//! a transient failure stops the run there and is retried with back-off and jitter, up to a
//! bound, then dead-lettered; malformed and permanently rejected messages are dead-lettered
//! with their payload and acked; unknown types are recorded and acked. Every handler is
//! idempotent, which is what makes a crash at any point safe: unacked messages come again.
#![warn(missing_docs)]

pub mod crash;
mod engine;
pub mod explain;
#[cfg(feature = "fakes")]
pub mod fakes;
pub mod model;
mod plan;
pub mod ports;

pub use engine::{
    BatchReport, Broker, BrokerConfig, BrokerPorts, BrokerStatus, LATENCY_BUCKETS, Latency,
    MAX_TYPES, Outcome, Outcomes, RECENT, Recent, Timings,
};
pub use plan::{OMM_NAME_MAX, omm_name};
