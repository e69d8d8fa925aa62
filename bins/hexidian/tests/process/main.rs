//! The `hexidian` binary as its own process: the command line, and crashes of the real process
//! at every step boundary (`kill -9` and the crash points of broker-core's `crash` module).
#![allow(clippy::unwrap_used)] // test helpers fail loudly
#![allow(clippy::print_stderr)] // seeds and kill counts are printed so a failure can be reproduced

mod cli;
mod crash;
mod ops;
mod scenario;
mod setup;
mod standby;
mod stream;
mod support;
