//! `omm-axi-sim`: an OMM simulator for manual runs, and `omm-axi-sim ctl` to drive it
//! (`--help`).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: its output is the point

use clap::Parser;
use omm_axi_sim::cli::{Args, Command, describe_text, run_ctl, start};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::Ctl(ctl)) = &args.command {
        return run_ctl(ctl);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omm-axi-sim: starting a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let running = match start(&args).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("omm-axi-sim: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let v = &running.description;
        if args.print_json {
            println!("{v}");
        } else {
            print!("{}", describe_text(v));
        }
        let _ = tokio::signal::ctrl_c().await;
        std::process::ExitCode::SUCCESS
    })
}
