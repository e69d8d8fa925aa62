//! hexidian with a real Asterisk: the GURU3 and OMM simulators drive hexidian, hexidian writes
//! a throwaway PostgreSQL, Asterisk (the build in `../shared/asterisk/`, or `HEXIDIAN_ASTERISK`)
//! reads it through the kit `hexidian asterisk-config` generates, and `sipp` phones register
//! and call. Every case asserts what Asterisk did.
//!
//! Without Asterisk or sipp every case says so on stderr and passes, unless
//! `HEXIDIAN_REQUIRE_ASTERISK=1` (set by `.ci/run` when `../shared/asterisk/` exists), which
//! makes their absence a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly
#![allow(clippy::print_stderr)] // absence and timings are reported on stderr

mod cases;
mod pbx;
mod sipp;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use guru3_sim::{Guru3Sim, Kind};
use hexidian::StoreSettings;
use hexidian_testkit::pg::TestDb;

pub(crate) const KEY: &str = "interop-hook-key";

/// Asterisk's schema generation for the world.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Schema {
    Modern,
    Legacy,
}

pub(crate) struct Interop {
    pub(crate) guru3: Guru3Sim,
    pub(crate) omm: omm_axi_sim::Sim,
    pub(crate) sql: tokio_postgres::Client,
    pub(crate) sip: sipp::Sip,
    pub(crate) ast: pbx::Asterisk,
    pub(crate) kit: PathBuf,
    run: Option<hexidian::Running>,
    _db: TestDb,
}

/// Reports a missing prerequisite: a failure under `HEXIDIAN_REQUIRE_ASTERISK=1`, else a
/// message and `None`.
fn absent<T>(what: &str) -> Option<T> {
    if std::env::var_os("HEXIDIAN_REQUIRE_ASTERISK").is_some_and(|v| v == "1") {
        panic!("asterisk interop: {what} (HEXIDIAN_REQUIRE_ASTERISK=1)");
    }
    eprintln!(
        "asterisk interop: SKIPPED, {what}. README.md (\"Asterisk interop suite\") says what it \
         needs."
    );
    None
}

/// Extra `[pbx]` lines for the world's config file.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) pbx: &'static str,
}

impl Interop {
    /// Starts everything with GURU3 seeded by `seed`, waits until hexidian has applied it,
    /// then starts Asterisk on the generated kit. `None` when Asterisk or sipp is absent.
    pub(crate) async fn start(
        schema: Schema,
        options: Options,
        seed: impl FnOnce(&Guru3Sim),
    ) -> Option<Self> {
        hexidian_testkit::init_tracing();
        if let Err(e) = pbx::tree() {
            return absent(&format!("no Asterisk: {e}"));
        }
        let sipp = match sipp::binary() {
            Ok(b) => b,
            Err(e) => return absent(&format!("no sipp: {e}")),
        };
        let dir = pbx::tempdir("interop").unwrap();
        let db = TestDb::new().await;
        let sql = db.connect().await;
        let ddl = match schema {
            Schema::Modern => "asterisk-modern.sql",
            Schema::Legacy => "asterisk-legacy.sql",
        };
        sql.batch_execute(
            &std::fs::read_to_string(hexidian_testkit::fixtures_dir().join("sql").join(ddl))
                .unwrap(),
        )
        .await
        .unwrap();

        // the operator's config file, and the kit generated from it
        let sip_port = sipp::free_udp_port();
        std::fs::write(dir.join("webhook-key"), KEY).unwrap();
        // override: sipp's phones (a UAS scenario with -m 1) end on an unexpected OPTIONS, so
        // Asterisk's qualify of a freshly registered contact would race the test's INVITE;
        // `qualify_sip_s = 0` is the documented setting for phones that do not answer OPTIONS
        let toml = |hook_addr: std::net::SocketAddr| {
            format!(
                "[guru3]\nurl = \"https://127.0.0.1:1\"\napi_key_env = \"UNUSED\"\n\
             [omm]\nhost = \"127.0.0.1\"\nuser = \"omm\"\npassword_env = \"UNUSED\"\nplain = true\n\
             [postgres]\nurl = \"{url}\"\n\
             [pbx]\nsip_bind = \"127.0.0.1:{sip_port}\"\nasterisk_db_user = \"asterisk\"\nqualify_sip_s = 0\n{extra}\n\
             [unbound]\nlisten = \"{hook_addr}\"\nkey_file = \"{key}\"\n",
                url = db.url_as("hexidian"),
                extra = options.pbx,
                key = dir.join("webhook-key").display(),
            )
        };
        let config = dir.join("hexidian.toml");
        let kit = dir.join("kit");
        let write_kit = |hook_addr| {
            std::fs::write(&config, toml(hook_addr)).unwrap();
            let file = hexidian::config::FileConfig::load(&config).unwrap();
            let files =
                hexidian::asterisk_kit::generate(&file, &config.display().to_string(), true)
                    .unwrap();
            hexidian::asterisk_kit::write(&files, &kit).unwrap();
            file
        };
        // the webhook's port is known once hexidian listens (port 0); until then the kit
        // serves the role script and the endpoint template
        let file = write_kit(std::net::SocketAddr::from(([127, 0, 0, 1], 9)));

        // the database set-up an operator runs once, as a superuser (roles are per cluster:
        // one at a time); from here on hexidian connects as role `hexidian` and Asterisk as
        // role `asterisk`, both made by this file
        db.run_as_superuser_alone(
            &std::fs::read_to_string(kit.join("hexidian-roles.sql")).unwrap(),
        )
        .await
        .unwrap();

        let guru3 = Guru3Sim::start(guru3_sim::Config::default()).await.unwrap();
        let omm = omm_axi_sim::Sim::start().await;
        seed(&guru3);
        let pg = asterisk_realtime::Config::new(&db.url_as("hexidian"))
            .unwrap()
            .template(file.pbx.template().unwrap())
            .routing_reader(Some("asterisk".into()));
        let mut s =
            hexidian_demo::sim_settings(&guru3, &omm, StoreSettings::Postgres(Box::new(pg)))
                .unwrap();
        let mut c =
            unbound_handsets::Config::new(unbound_handsets::TempNumbers::new("0100", 8).unwrap());
        c.subscription_mode = Some("Wildcard".into());
        c.key = Some(broker_core::model::Secret::new(KEY));
        s.unbound = Some(hexidian::UnboundSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            deadline: Duration::from_secs(3),
            config: c,
        });
        let run = hexidian::start(s).await.unwrap();
        write_kit(run.webhook_addr().expect("the webhook listens"));
        let w = Self {
            ast: pbx::Asterisk::start(&kit)
                .await
                .unwrap_or_else(|e| panic!("asterisk did not start: {e}")),
            sip: sipp::Sip::new(
                sipp,
                &dir,
                std::net::SocketAddr::from(([127, 0, 0, 1], sip_port)),
            ),
            guru3,
            omm,
            sql,
            kit,
            run: Some(run),
            _db: db,
        };
        w.drained().await;
        // the generated res_pgsql.conf is complete: the driver warns about nothing it lacks
        let pgsql: Vec<String> = w
            .ast
            .log()
            .lines()
            .filter(|l| {
                l.contains("res_config_pgsql.c") && (l.contains("WARNING") || l.contains("ERROR"))
            })
            .map(str::to_owned)
            .collect();
        assert!(pgsql.is_empty(), "res_config_pgsql complained: {pgsql:#?}");
        Some(w)
    }

    /// Waits until GURU3's queue is empty (everything applied and acked).
    pub(crate) async fn drained(&self) {
        let t0 = Instant::now();
        while self.guru3.pending_count() > 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "not drained: {:?}",
                self.guru3.pending().first()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The SIP password of a number: GURU3's for SIP, hexidian's (from `ps_auths`) else.
    pub(crate) async fn password(&self, number: &str) -> String {
        if let Some(guru3_sim::Extension {
            kind: Kind::Sip { password, .. },
            ..
        }) = self.guru3.extension(number)
        {
            return password;
        }
        self.sql
            .query_one(
                "SELECT password::text FROM ps_auths WHERE id = $1",
                &[&number],
            )
            .await
            .unwrap_or_else(|e| panic!("no ps_auths row for {number}: {e}"))
            .get(0)
    }

    /// The numbers GURU3 has as SIP or DECT extensions.
    pub(crate) fn guru3_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .guru3
            .extensions()
            .into_iter()
            .filter(|e| matches!(e.kind, Kind::Sip { .. } | Kind::Dect { .. }))
            .map(|e| e.number)
            .collect();
        v.sort();
        v
    }

    pub(crate) fn webhook(&self) -> std::net::SocketAddr {
        self.run
            .as_ref()
            .and_then(hexidian::Running::webhook_addr)
            .unwrap()
    }
}

impl Drop for Interop {
    fn drop(&mut self) {
        if let Some(r) = self.run.take() {
            r.abort();
        }
    }
}

/// Polls `f` every 50 ms until it is true or `limit` passed; whether it became true.
pub(crate) async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
