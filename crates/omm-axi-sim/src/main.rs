//! `omm-axi-sim`: an OMM simulator for manual runs (`--help`).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its output is the point

use clap::Parser;
use omm_axi_sim::Sim;
use omm_axi_sim::cli::{Args, describe, describe_text, seed};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sim = match Sim::try_start_with(args.config()).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("omm-axi-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    seed(&sim, &args);
    let v = describe(&sim);
    if args.print_json {
        println!("{v}");
    } else {
        print!("{}", describe_text(&v));
    }
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
