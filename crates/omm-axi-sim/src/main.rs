//! Runs the OMM simulator until Ctrl-C, for manual tests and demos.

use omm_axi_sim::{Sim, SimConfig};

#[tokio::main]
#[allow(clippy::print_stdout)] // a command-line tool reports where it listens
async fn main() {
    let sim = Sim::start_with(SimConfig::default()).await;
    let ppn = sim.seed_device("03074 0220259 3");
    println!(
        "omm-axi-sim: TLS on {} (test CA, fingerprint {}), plain TCP on {}",
        sim.addr(),
        hexidian_testkit::fingerprint_hex("server"),
        sim.plain_addr()
    );
    println!("account omm/omm; seeded device ppn {ppn}; Ctrl-C stops");
    let _ = tokio::signal::ctrl_c().await;
}
