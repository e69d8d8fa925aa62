//! `guru3-sim`: a GURU3 simulator for manual runs. Prints its URL and key, seeds a few
//! extensions, and serves until Ctrl-C.
#![allow(clippy::print_stdout)] // a command-line tool: its output is the point

use guru3_sim::{Config, Extension, Guru3Sim, Kind, Member};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let sim = Guru3Sim::start(Config::default()).await?;
    let seed = [
        Extension::new("2001", "Lena Brandt", Kind::sip()),
        Extension::new("2002", "Kiosk Nord", Kind::dect()),
        Extension::new("1100", "Infodesk", Kind::group("INF")),
    ];
    for e in seed {
        sim.save(e).map_err(std::io::Error::other)?;
    }
    sim.set_members(
        "1100",
        vec![Member::new("2001", 0), Member::new("2002", 10)],
    )
    .map_err(std::io::Error::other)?;
    println!("guru3-sim listening");
    println!("  url:      {}", sim.url());
    println!("  event id: {}", sim.event_id());
    println!("  api key:  {}", sim.api_key());
    println!(
        "  ca:       {}",
        hexidian_testkit::fixtures_dir()
            .join("tls/ca.pem")
            .display()
    );
    println!("  queue:    {} messages pending", sim.pending().len());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
