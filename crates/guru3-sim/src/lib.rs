//! A GURU3 simulator for tests and demos: the consumer REST API (`GET`/`POST
//! /api/event/<id>/messages`) and the `/status/stream/` websocket, over real HTTP/1.1 and TLS
//! on `127.0.0.1:0`.
//!
//! It models what the wire shows of GURU3 (`shared/specs/guru3.md`): extensions of every type,
//! call groups, handsets, the message queue with `(timestamp, id)` order and the `delivered`
//! flag, the messages each user action emits (and the cascades GURU3 does *not* send), the
//! admin resync, `ASSIGN_HANDSET` with GURU3's OK/NAK texts, and its status codes. Its JSON is
//! written like Python's `json.dumps`. It shares no code with `guru3-client`.
//!
//! Faults: failing and slow responses, lost acks, the frame-before-commit race, websocket
//! drops and refusals, replays.
//!
//! The `guru3-sim` command serves it with a control API ([`control`]) that `guru3-sim ctl`
//! drives.

pub mod cli;
pub mod control;
mod json;
mod seed;
mod server;
mod state;

pub use json::J;
pub use seed::{seed_event, seed_example};
pub use server::{Config, Guru3Sim};
pub use state::{Extension, Forward, Handset, InboundRecord, Kind, Member};
