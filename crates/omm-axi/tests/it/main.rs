//! Integration tests of `omm-axi`: decoded fixtures and encoded requests (insta), properties
//! (proptest), the client against a scripted peer, and the client against the TLS simulator.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions fail loudly too

mod encode;
mod fixtures;
mod props;
mod scripted;
mod sim;
mod sim_control;
#[cfg(feature = "openssl")]
mod static_rsa;
