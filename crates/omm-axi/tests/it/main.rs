//! Integration tests of `omm-axi`: decoded fixtures and encoded requests (insta), properties
//! (proptest), the client against a scripted peer, and the client against the TLS simulator.

mod encode;
mod fixtures;
mod props;
mod scripted;
mod sim;
