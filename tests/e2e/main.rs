//! hexidian end to end: `hexidian::start` against guru3-sim and omm-axi-sim over TLS and a
//! throwaway PostgreSQL with the Asterisk test schema. Every test ends by comparing the
//! OMM, the PBX tables and the broker's state with what GURU3 says.
#![allow(clippy::unwrap_used)] // test helpers fail loudly
#![allow(clippy::print_stderr)] // the crash-point seed is printed so a failure can be reproduced

mod drift;
mod faults;
mod metrics;
mod page;
mod requests;
mod scenario;
#[cfg(feature = "static-rsa-sim")]
mod static_rsa;
mod stream;
mod unbound;

pub(crate) use hexidian_e2e::{Rng, World, http_get, sample};
