//! Integration tests of guru3-client: fixtures, properties, and the client against guru3-sim.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod fixtures;
mod props;
mod sim;
mod sim_control;

use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    hexidian_testkit::fixtures_dir().join("guru3")
}
