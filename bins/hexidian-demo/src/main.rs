//! `hexidian-demo`: everything on loopback (simulators, a throwaway store, a scripted
//! scenario). The production binary `hexidian` links none of it.
#![allow(clippy::print_stderr)] // a command-line tool reports on its terminal

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hexidian-demo",
    version,
    about = "hexidian against its simulators on loopback, with a scripted scenario"
)]
struct Cli {
    /// Log format: human or json (RUST_LOG sets the filter, default info)
    #[arg(long)]
    log_format: Option<String>,
    #[command(flatten)]
    demo: hexidian_demo::DemoArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = hexidian::cli::shutdown_signal();
    hexidian::cli::init_logging(cli.log_format.as_deref());
    match hexidian_demo::run(cli.demo, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hexidian-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
