//! A simulated Mitel OMM speaking OM AXI over real TLS and plain TCP on loopback.
//!
//! Built from the protocol description, with its own XML reader/writer and RSA code: it does
//! not use the `omm-axi` client crate, so tests against it cannot confirm themselves.
//!
//! Start it with [`Sim::start`], point a client at [`Sim::addr`] (TLS, test CA or self-signed
//! certificate) or [`Sim::plain_addr`], drive handsets with [`Sim::handset_subscribe`],
//! inject faults with [`Sim::faults`], inspect with [`Sim::view`] and await conditions with
//! [`Sim::wait_for`]. The clock is virtual: [`Sim::advance`] moves it.
//!
//! The `omm-axi-sim` command serves it with a control API ([`control`]) that
//! `omm-axi-sim ctl` drives.

pub mod cli;
pub mod control;
mod crypto;
mod handle;
mod server;
mod state;
mod table;
mod wire;

pub use crypto::KeySize;
pub use server::{Identity, Refused, Sim, SimConfig, View};
pub use state::{Attrs, EventStyle, Faults, Knobs, Mode, Received};
pub use wire::Node;
