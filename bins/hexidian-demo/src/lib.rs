//! `hexidian-demo`: the whole broker on loopback with nothing external. It starts the GURU3
//! and OMM simulators, a throwaway PostgreSQL (or an in-memory PBX store when no server
//! binaries are installed), runs the broker, plays a scenario (extensions of every type,
//! call groups, renames, deletes, an unsubscribe, a resync), checks the result against the
//! simulators and the store, prints a summary and keeps everything up until Ctrl-C.

use std::future::Future;
use std::time::{Duration, Instant};

use guru3_sim::{Guru3Sim, Kind};

use hexidian::{Settings, StoreSettings};

/// Prints a line; a closed stdout (`| head`) is not an error worth a panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Options of `hexidian-demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Extensions to create (70 % DECT, 25 % SIP, 5 % groups, plus a few of the other types)
    #[arg(long, default_value_t = 300)]
    pub extensions: usize,
    /// Exit after the summary instead of keeping the simulators up
    #[arg(long)]
    pub exit: bool,
    /// Use the in-memory PBX store even when PostgreSQL binaries are installed
    #[arg(long)]
    pub memory: bool,
    /// Start only a throwaway PostgreSQL set up as for a real event (Asterisk's schema, then
    /// the roles file `hexidian asterisk-config` writes), print hexidian's connection string
    /// and keep it until Ctrl-C: the database for `hexidian run` against the simulators
    #[arg(long, conflicts_with_all = ["memory", "extensions"])]
    pub database_only: bool,
    /// With --database-only: also write the connection string as HEXIDIAN_DEMO_PG_URL to this
    /// file, for `. FILE`
    #[arg(long, value_name = "FILE", requires = "database_only")]
    pub env_file: Option<std::path::PathBuf>,
}

/// hexidian's database role in the example config (`[postgres] url`).
pub const HEXIDIAN_ROLE: &str = "hexidian";

/// The roles file `hexidian asterisk-config` writes for the example config.
pub fn roles_sql() -> Result<String, String> {
    let kit = hexidian::asterisk_kit::generate(
        &hexidian::config::FileConfig::example(),
        "examples/hexidian.toml",
        false,
    )?;
    kit.into_iter()
        .find(|f| f.name == "hexidian-roles.sql")
        .map(|f| f.text)
        .ok_or_else(|| "the Asterisk kit has no hexidian-roles.sql".into())
}

/// A throwaway database set up as `examples/asterisk/README.md` says: Asterisk's schema,
/// then the shipped roles file as a superuser. hexidian connects as [`HEXIDIAN_ROLE`].
pub async fn event_database() -> Result<hexidian_testkit::pg::TestDb, String> {
    hexidian_testkit::pg::server_binaries()?;
    let db = hexidian_testkit::pg::TestDb::new().await;
    let ddl = hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql");
    let ddl = std::fs::read_to_string(&ddl).map_err(|e| format!("{}: {e}", ddl.display()))?;
    db.connect()
        .await
        .batch_execute(&ddl)
        .await
        .map_err(|e| format!("loading the Asterisk schema: {e}"))?;
    db.run_as_superuser_alone(&roles_sql()?)
        .await
        .map_err(|e| format!("the roles file: {e}"))?;
    Ok(db)
}

async fn database_only(args: &DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let db = event_database().await?;
    let url = db.url_as(HEXIDIAN_ROLE);
    if let Some(path) = &args.env_file {
        hexidian_testkit::control::write_env_file(path, &[("HEXIDIAN_DEMO_PG_URL", url.clone())])
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    say!("throwaway PostgreSQL with Asterisk's schema and hexidian's roles; for [postgres] url:");
    say!("  {url}");
    say!("Ctrl-C stops it (and deletes it)");
    shutdown.await;
    drop(db);
    Ok(())
}

pub use guru3_sim::seed_event as seed;
pub use hexidian_testkit::ids::ipei;

/// Waits until GURU3's queue is empty (every message acked); prints progress when it changes
/// (and says so once when nothing moves for a while).
pub async fn drained(sim: &Guru3Sim, what: &str) -> Duration {
    let t0 = Instant::now();
    let mut last = Instant::now();
    let mut shown = usize::MAX;
    let mut said_waiting = false;
    while sim.pending_count() > 0 {
        let pending = sim.pending_count();
        if last.elapsed() > Duration::from_secs(1) {
            if pending != shown {
                say!("  {what}: {pending} messages pending");
                shown = pending;
            } else if !said_waiting && what == "resync" {
                say!(
                    "  {what}: waiting for hexidian's next poll (GURU3 announces no resync on the websocket; the example config polls every 30 s)"
                );
                said_waiting = true;
            }
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

/// Runs the demo.
pub async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    if args.database_only {
        return database_only(&args, shutdown).await;
    }
    let t0 = Instant::now();
    let guru3 = Guru3Sim::start(guru3_sim::Config::default())
        .await
        .map_err(|e| e.to_string())?;
    let omm = omm_axi_sim::Sim::start().await;
    let _db;
    let store = match hexidian_testkit::pg::server_binaries() {
        Ok(_) if !args.memory => {
            let db = hexidian_testkit::pg::TestDb::new().await;
            let ddl = hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql");
            let ddl =
                std::fs::read_to_string(&ddl).map_err(|e| format!("{}: {e}", ddl.display()))?;
            db.connect()
                .await
                .batch_execute(&ddl)
                .await
                .map_err(|e| format!("loading the Asterisk schema: {e}"))?;
            let cfg = asterisk_realtime::Config::new(&db.url()).map_err(|e| e.to_string())?;
            say!("PBX store: throwaway PostgreSQL ({})", db.url());
            _db = Some(db);
            StoreSettings::Postgres(Box::new(cfg))
        }
        other => {
            if let Err(why) = other {
                say!("PBX store: in memory ({why})");
            } else {
                say!("PBX store: in memory");
            }
            _db = None;
            memory_store()
        }
    };
    let settings = sim_settings(&guru3, &omm, store)?;
    let running = hexidian::start(settings).await.map_err(|e| e.to_string())?;
    match running.admin_addr() {
        Some(a) => {
            say!(
                "hexidian running; status page: http://{a}/ (live), readiness http://{a}/readyz, metrics http://{a}/metrics"
            )
        }
        None => say!("hexidian running (no admin listener)"),
    }

    let (dect, sip, groups) = seed(&guru3, args.extensions)?;
    say!("created {dect} DECT, {sip} SIP, {groups} group extensions and 4 others in GURU3");
    let t = drained(&guru3, "initial load").await;
    say!("  applied in {:.2} s", t.as_secs_f64());

    // live edits: renames, deletes, an unsubscribe, a new handset
    let exts = guru3.extensions();
    let dects: Vec<String> = exts
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dect { .. }))
        .map(|e| e.number.clone())
        .collect();
    for (k, n) in dects.iter().take(5).enumerate() {
        guru3.rename(n, &format!("2{k:04}"))?;
    }
    for n in dects.iter().skip(5).take(5) {
        guru3.delete(n)?;
    }
    if let Some(with_handset) = exts
        .iter()
        .find(|e| e.handset.is_some() && !dects[..10.min(dects.len())].contains(&e.number))
    {
        guru3.unsubscribe(&with_handset.number)?;
    }
    let t = drained(&guru3, "live edits").await;
    say!(
        "5 renames, 5 deletes, 1 unsubscribe applied in {:.2} s",
        t.as_secs_f64()
    );

    guru3.resync();
    say!("resync triggered (GURU3 sends no websocket frame for it: the poll timer finds it)");
    let t = drained(&guru3, "resync").await;
    say!(
        "resync of {} extensions applied in {:.2} s",
        guru3.extensions().len(),
        t.as_secs_f64()
    );

    // check the result against the simulators
    let view = omm.view();
    let want_dect = guru3
        .extensions()
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dect { .. }))
        .count();
    let tag = |a: &std::collections::BTreeMap<String, String>, k: &str| {
        a.get(k).cloned().unwrap_or_default()
    };
    let omm_users = view
        .users
        .iter()
        .filter(|(_, a)| tag(a, "hierarchy1") == hexidian::adapters::OWNER_TAG)
        .filter(|(_, a)| tag(a, "hierarchy2") != hexidian::adapters::TEMP_TAG)
        .count();
    let temporary = view
        .users
        .iter()
        .filter(|(_, a)| tag(a, "hierarchy2") == hexidian::adapters::TEMP_TAG)
        .count();
    let bound = view
        .devices
        .iter()
        .filter(|(_, a)| a.get("uid").is_some_and(|u| u != "0"))
        .count();
    let status = running.status();
    say!("summary after {:.1} s:", t0.elapsed().as_secs_f64());
    say!(
        "  GURU3 DECT extensions {want_dect}, OMM users owned by hexidian {omm_users}, handsets bound {bound}"
    );
    say!(
        "  unbound handsets on a temporary number: {temporary} (of deleted or unsubscribed extensions)"
    );
    say!(
        "  messages applied {}, ignored {}, dead-lettered {}",
        status.done,
        status.ignored,
        status.dead
    );
    if omm_users != want_dect {
        return Err(format!(
            "OMM has {omm_users} users, GURU3 {want_dect} DECT extensions"
        ));
    }
    say!("  ok: OMM and GURU3 agree");
    if args.exit {
        running.stop().await.map_err(|e| e.to_string())?;
        return Ok(());
    }
    say!("simulators stay up until Ctrl-C:");
    say!(
        "  GURU3  {}  (event {}, key {})",
        guru3.url(),
        guru3.event_id(),
        guru3.api_key()
    );
    say!("  OMM    {}  (user omm, password omm)", omm.addr());
    shutdown.await;
    running.stop().await.map_err(|e| e.to_string())
}

/// The in-memory store (the fakes of `broker-core` and `unbound-handsets`) behind every
/// store port.
pub fn memory_store() -> StoreSettings {
    StoreSettings::Ports(hexidian::StorePorts {
        sip: std::sync::Arc::new(broker_core::fakes::MemorySip::default()),
        state: std::sync::Arc::new(broker_core::fakes::MemoryState::default()),
        handsets: std::sync::Arc::new(unbound_handsets::fakes::MemoryHandsetState::default()),
    })
}

/// Settings that point hexidian at the two simulators.
pub fn sim_settings(
    guru3: &Guru3Sim,
    omm: &omm_axi_sim::Sim,
    store: StoreSettings,
) -> Result<Settings, String> {
    let key: guru3_client::ApiKey = guru3.api_key().parse().map_err(|e| format!("{e}"))?;
    let g = guru3_client::Config::new(&guru3.url(), key)
        .map_err(|e| e.to_string())?
        .tls(guru3_client::client::tls::with_roots(
            hexidian_testkit::ca_roots(),
        ));
    let fp: omm_axi::Fingerprint = hexidian_testkit::fingerprint_hex("server")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let o = omm_axi::Config::new("127.0.0.1", "omm", "omm")
        .port(omm.addr().port())
        .tls(omm_axi::client::tls::pinned(&[fp]));
    // tuning as `hexidian run` takes it from the example config
    let (feed, broker) = hexidian::config::FileConfig::example().tuning();
    Ok(Settings {
        guru3: g,
        feed,
        omm: o,
        store,
        broker,
        admin: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: None,
        admin_stream_clients: hexidian::config::FileConfig::example().admin.stream_clients,
        reconcile_every: hexidian::config::FileConfig::example()
            .reconcile
            .interval_s
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        omm_token_field: false,
        ha: hexidian::HaSettings::default(),
        unbound: Some(hexidian::UnboundSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            deadline: Duration::from_secs(3),
            config: {
                let mut c =
                    unbound_handsets::Config::new(unbound_handsets::TempNumbers::new("0100", 8)?);
                c.subscription_mode = Some("Configured".into());
                c
            },
        }),
    })
}
