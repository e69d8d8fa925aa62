//! `guru3-sim`: a GURU3 simulator for manual runs (`--help`).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its output is the point

use clap::Parser;
use guru3_sim::Guru3Sim;
use guru3_sim::cli::{Args, describe, describe_text, seed};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sim = match Guru3Sim::start(args.config()).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("guru3-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = seed(&sim, &args) {
        eprintln!("guru3-sim: seeding: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let v = describe(&sim, !args.plain);
    if args.print_json {
        println!("{v}");
    } else {
        print!("{}", describe_text(&v));
    }
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
