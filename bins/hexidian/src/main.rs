//! `hexidian`: command line, config file, logging and signals. Everything else is in the
//! library (`hexidian::run`).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports on its terminal

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hexidian",
    version = hexidian::VERSION,
    about = "Provisioning broker: GURU3 → Mitel OMM and Asterisk"
)]
struct Cli {
    /// Log format: human or json (RUST_LOG sets the filter, default info)
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the broker
    Run {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the config file and connect to each peer once (changes nothing)
    CheckConfig {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// Read the file, its secrets and certificates, but contact no peer (e.g. right
        /// after installing, before the peers are reachable)
        #[arg(long)]
        offline: bool,
    },
    /// Apply pending migrations of hexidian's schema in PostgreSQL
    Migrate {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the Asterisk configuration kit filled from the config file
    AsteriskConfig {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// Folder to write into (created if missing)
        #[arg(long, default_value = "asterisk")]
        out: PathBuf,
        /// Fill in the webhook key and Asterisk's database password (else "change-me")
        #[arg(long)]
        with_secrets: bool,
    },
    /// The running hexidian's readiness: peers, backlog, stall, dead letters, temporary
    /// handsets (asks its admin API at [admin] listen; exits non-zero when not ready)
    Status {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// The /readyz JSON as it came
        #[arg(long)]
        json: bool,
        /// Where the admin API listens (default: [admin] listen of the config)
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Dead letters: messages given up on (reads the journal in PostgreSQL directly; safe
    /// while hexidian runs)
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCmd,
    },
    /// What hexidian would do with GURU3 messages: the PBX, OMM and mirror changes its
    /// planner makes for them against the stored mirror (reads PostgreSQL directly, writes
    /// nothing, asks neither GURU3 nor the OMM)
    Explain {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// A JSON file with one GURU3 message envelope or an array of them; `-` reads
        /// standard input
        #[arg(required_unless_present_any = ["journal", "resync"], conflicts_with_all = ["journal", "resync"])]
        file: Option<PathBuf>,
        /// Instead of a file: the dead letter with this message id (see `dead-letters list`)
        #[arg(long, conflicts_with = "resync")]
        journal: Option<i64>,
        /// Instead of a file: a full resync now (reads the PBX rows and the OMM, its own
        /// session, as `reconcile` does; plans the repair of every number that differs)
        #[arg(long)]
        resync: bool,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// What the OMM holds, each user marked owned (hexidian's, of an extension), temporary
    /// (hexidian's, of a handset without one) or foreign (never touched); opens its own OM
    /// AXI session with the config's account and writes nothing
    Omm {
        #[command(subcommand)]
        command: OmmCmd,
    },
    /// Compares the mirror (GURU3's extensions as hexidian applied them) with the PBX rows
    /// and the OMM and lists every drift: missing, extra, different (with the field), and
    /// foreign OMM users hexidian never touches (reads PostgreSQL, opens its own OM AXI
    /// session, writes nothing). Exits non-zero when hexidian's own objects drifted
    Reconcile {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// Repair the drift of hexidian's own objects through the running hexidian's broker
        /// (asks its admin API; compares again afterwards). Foreign objects stay untouched
        #[arg(long)]
        apply: bool,
        /// With --apply: how long to wait for the repairs, in seconds (at most 600)
        #[arg(long, default_value_t = 60, requires = "apply", value_parser = clap::value_parser!(u64).range(1..=600))]
        wait: u64,
        /// With --apply: where the admin API listens (default: [admin] listen of the config)
        #[arg(long, requires = "apply")]
        admin: Option<std::net::SocketAddr>,
        /// One JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// The demo is a binary of its own, so this one links no simulator
    #[command(hide = true, disable_help_flag = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum OmmCmd {
    /// Every user: number, name, uid, owner, bound handset
    Users {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Every handset: ppn, IPEI, subscription, the number and owner of its user
    Devices {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// One handset by IPEI (`DDDDD DDDDDDD C`), with its user
    Handset {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// The handset's IPEI
        ipei: String,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeadLetterCmd {
    /// Every dead letter, oldest first: id, type, number, attempts, last try, reason, and
    /// whether a later message for the same number was applied
    List {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Runs dead letters through the running hexidian's broker again (asks its admin API;
    /// the stored message with its secrets put back, same planner and journal): each ends
    /// done, dead again, or still retried; one made moot by a later message is skipped.
    /// Exits non-zero unless every one ended done or skipped
    Replay {
        /// TOML config file
        #[arg(long)]
        config: PathBuf,
        /// Message ids (see `dead-letters list`)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<i64>,
        /// Every dead letter (oldest first, at most 1,000 per run)
        #[arg(long)]
        all: bool,
        /// How long to wait for the outcome of each batch of 50, in seconds (at most 600)
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
        wait: u64,
        /// Where the admin API listens (default: [admin] listen of the config)
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
}

// One worker thread (see ARCHITECTURE.md, "One runtime worker"): the broker is one loop of
// round trips, and a second worker only spreads its heap over a second malloc arena.
#[tokio::main(worker_threads = 1)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = hexidian::cli::shutdown_signal();
    let result = match cli.command {
        Cmd::Run { config } => {
            let file = match hexidian::config::FileConfig::load(&config) {
                Ok(f) => f,
                Err(e) => return fail(&e),
            };
            hexidian::cli::init_logging(cli.log_format.as_deref().or(file.log.format.as_deref()));
            if let Err(e) = arm_crash_point() {
                return fail(&e);
            }
            match file.settings() {
                Ok(s) => hexidian::run(s, shutdown).await.map_err(|e| report(&e)),
                Err(e) => Err(e),
            }
        }
        Cmd::CheckConfig { config, offline } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            hexidian::config::check(&config, offline).await
        }
        Cmd::Migrate { config } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            hexidian::config::migrate(&config).await
        }
        Cmd::AsteriskConfig {
            config,
            out,
            with_secrets,
        } => asterisk_config(&config, &out, with_secrets),
        Cmd::Status {
            config,
            json,
            admin,
        } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            match hexidian::ops::status(&config, admin, json).await {
                Ok((text, ready)) => {
                    print!("{text}");
                    if ready {
                        Ok(())
                    } else {
                        Err("not ready".into())
                    }
                }
                Err(e) => Err(e),
            }
        }
        Cmd::DeadLetters {
            command: DeadLetterCmd::List { config, json },
        } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            hexidian::ops::dead_letters_list(&config, json)
                .await
                .map(|text| print!("{text}"))
        }
        Cmd::DeadLetters {
            command:
                DeadLetterCmd::Replay {
                    config,
                    ids,
                    all,
                    wait,
                    admin,
                    json,
                },
        } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            let wait = std::time::Duration::from_secs(wait);
            match hexidian::ops::dead_letters_replay(&config, admin, &ids, all, wait, json).await {
                Ok((text, fine)) => {
                    print!("{text}");
                    if fine {
                        Ok(())
                    } else {
                        Err("not every dead letter was applied".into())
                    }
                }
                Err(e) => Err(e),
            }
        }
        Cmd::Explain {
            config,
            file,
            journal,
            resync,
            json,
        } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            let source = match (file, journal) {
                _ if resync => Ok(hexidian::ops::Source::Resync),
                (_, Some(id)) => Ok(hexidian::ops::Source::Journal(id)),
                (Some(f), None) if f.as_os_str() == "-" => Ok(hexidian::ops::Source::Stdin),
                (Some(f), None) => Ok(hexidian::ops::Source::File(f)),
                (None, None) => Err("give a message file (`-`: standard input) or --journal ID"),
            };
            match source {
                Ok(source) => hexidian::ops::explain(&config, source, json)
                    .await
                    .map(|text| print!("{text}")),
                Err(e) => Err(e.to_owned()),
            }
        }
        Cmd::Reconcile {
            config,
            apply,
            wait,
            admin,
            json,
        } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            let done = if apply {
                let wait = std::time::Duration::from_secs(wait);
                hexidian::ops::reconcile_apply(&config, admin, wait, json).await
            } else {
                hexidian::ops::reconcile(&config, json).await
            };
            match done {
                Ok((text, clean)) => {
                    print!("{text}");
                    if clean {
                        Ok(())
                    } else {
                        Err("hexidian's own objects drifted from GURU3's extensions".into())
                    }
                }
                Err(e) => Err(e),
            }
        }
        Cmd::Omm { command } => {
            hexidian::cli::init_logging(cli.log_format.as_deref());
            let (config, what, json) = match command {
                OmmCmd::Users { config, json } => (config, hexidian::ops::OmmList::Users, json),
                OmmCmd::Devices { config, json } => (config, hexidian::ops::OmmList::Devices, json),
                OmmCmd::Handset { config, ipei, json } => {
                    (config, hexidian::ops::OmmList::Handset(ipei), json)
                }
            };
            hexidian::ops::omm(&config, what, json)
                .await
                .map(|text| print!("{text}"))
        }
        Cmd::Demo { args } => Err(format!(
            "the demo is its own binary, so that this one links no simulator: \
             cargo run -p hexidian-demo{}{}",
            if args.is_empty() { "" } else { " -- " },
            args.join(" ")
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn asterisk_config(
    config: &std::path::Path,
    out: &std::path::Path,
    secrets: bool,
) -> Result<(), String> {
    let file = hexidian::config::FileConfig::load(config)?;
    let files = hexidian::asterisk_kit::generate(&file, &config.display().to_string(), secrets)?;
    hexidian::asterisk_kit::write(&files, out)?;
    for f in &files {
        println!("{}", out.join(f.name).display());
    }
    Ok(())
}

/// Test builds only (the `failpoints` feature of broker-core): the crash point named in
/// `HEXIDIAN_CRASH_AT`. A release build says so and runs normally.
fn arm_crash_point() -> Result<(), String> {
    #[allow(clippy::disallowed_methods)] // a test's instruction to this process
    let Ok(spec) = std::env::var(broker_core::crash::ENV) else {
        return Ok(());
    };
    match broker_core::crash::arm(&spec)? {
        Some((name, n)) => tracing::warn!(point = name, hits = n, "crash point armed"),
        None => tracing::warn!(
            "{} is set, but this build has no crash points; ignored",
            broker_core::crash::ENV
        ),
    }
    Ok(())
}

fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        // errors that quote their cause already: name each cause once
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = c.source();
    }
    s
}

fn fail(msg: &str) -> ExitCode {
    // the journal files this line as an error
    let priority = if hexidian::cli::stderr_is_journal() {
        "<3>"
    } else {
        ""
    };
    eprintln!("{priority}hexidian: {msg}");
    ExitCode::FAILURE
}
