//! The world every end-to-end test runs in, and what checks it.
#![allow(clippy::unwrap_used)] // test helpers fail loudly
#![allow(clippy::print_stderr)] // the crash-point seed is printed so a failure can be reproduced

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use guru3_sim::{Guru3Sim, Kind};
use hexidian::{Running, StoreSettings};
use hexidian_testkit::pg::TestDb;

/// Both simulators, a throwaway PostgreSQL with the Asterisk schema, and a client on it.
pub struct World {
    pub guru3: Guru3Sim,
    pub omm: omm_axi_sim::Sim,
    pub db: TestDb,
    pub sql: tokio_postgres::Client,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("guru3", &self.guru3.url())
            .field("omm", &self.omm.addr())
            .field("db", &self.db.name())
            .finish_non_exhaustive()
    }
}

/// hexidian's database role in the example config (`[postgres] url`).
pub const HEXIDIAN_ROLE: &str = hexidian_demo::HEXIDIAN_ROLE;
/// Asterisk's reader role in the example config (`[pbx] asterisk_db_user`).
pub const ASTERISK_ROLE: &str = "asterisk";

/// The roles file `hexidian asterisk-config` writes for the example config.
pub fn roles_sql() -> String {
    hexidian_demo::roles_sql().unwrap()
}

impl World {
    /// Simulators and a database on a shared throwaway PostgreSQL server.
    pub async fn new() -> Self {
        Self::with_db(TestDb::new().await).await
    }

    /// The same on a database of the caller's.
    pub async fn with_db(db: TestDb) -> Self {
        hexidian_testkit::init_tracing();
        let guru3 = Guru3Sim::start(guru3_sim::Config::default()).await.unwrap();
        let omm = omm_axi_sim::Sim::start().await;
        let sql = db.connect().await;
        let ddl = hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql");
        sql.batch_execute(&std::fs::read_to_string(ddl).unwrap())
            .await
            .unwrap();
        // the documented set-up: Asterisk's schema, then the shipped roles file as a
        // superuser; hexidian connects as its own role (`HEXIDIAN_ROLE`)
        db.run_as_superuser_alone(&roles_sql()).await.unwrap();
        Self {
            guru3,
            omm,
            db,
            sql,
        }
    }

    /// hexidian's connection string: its own role, as the roles file made it.
    pub fn hexidian_url(&self) -> String {
        self.db.url_as(HEXIDIAN_ROLE)
    }

    /// hexidian's settings for this world, as `hexidian run` takes them from the example config.
    pub fn settings(&self) -> hexidian::Settings {
        let pg = asterisk_realtime::Config::new(&self.hexidian_url())
            .unwrap()
            .routing_reader(Some(ASTERISK_ROLE.into()));
        // the feed and broker tuning are the production defaults (examples/hexidian.toml)
        hexidian_demo::sim_settings(
            &self.guru3,
            &self.omm,
            StoreSettings::Postgres(Box::new(pg)),
        )
        .unwrap()
    }

    /// hexidian in this process with [`World::settings`].
    pub async fn start(&self) -> Running {
        hexidian::start(self.settings()).await.unwrap()
    }

    /// hexidian in this process with the given settings.
    pub async fn start_with(&self, s: hexidian::Settings) -> Running {
        hexidian::start(s).await.unwrap()
    }

    /// Saves an extension in GURU3 and waits until everything is acked.
    pub async fn save_drained(&self, ext: guru3_sim::Extension) {
        self.guru3.save(ext).unwrap();
        self.drained(Duration::from_secs(30)).await;
    }

    /// Waits until every GURU3 message is acked.
    pub async fn drained(&self, limit: Duration) {
        let t0 = Instant::now();
        while self.guru3.pending_count() > 0 {
            assert!(
                t0.elapsed() < limit,
                "not drained after {limit:?}: {} pending, first {:?}",
                self.guru3.pending().len(),
                self.guru3.pending().first()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One text column of a query's rows.
    pub async fn column(&self, q: &str) -> BTreeSet<String> {
        self.sql
            .query(q, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }

    /// Asserts that the OMM, the PBX and the broker's mirror hold what GURU3 holds.
    pub async fn assert_converged(&self) {
        let exts = self.guru3.extensions();
        let of = |f: fn(&Kind) -> bool| -> BTreeSet<String> {
            exts.iter()
                .filter(|e| f(&e.kind))
                .map(|e| e.number.clone())
                .collect()
        };
        let dect = of(|k| matches!(k, Kind::Dect { .. }));
        let sip = of(|k| matches!(k, Kind::Sip { .. }));
        let groups = of(|k| matches!(k, Kind::Group { .. }));

        // OMM: exactly the DECT extensions, with the PBX password and sanitised names
        let view = self.omm.view();
        let owned: BTreeMap<String, (u32, &BTreeMap<String, String>)> = view
            .users
            .iter()
            .filter(|(_, a)| {
                a.get("hierarchy1").map(String::as_str) == Some(hexidian::adapters::OWNER_TAG)
            })
            // temporary users of unbound handsets are not GURU3's
            .filter(|(_, a)| {
                a.get("hierarchy2").map(String::as_str) != Some(hexidian::adapters::TEMP_TAG)
            })
            .map(|(uid, a)| (a["num"].clone(), (*uid, a)))
            .collect();
        assert_eq!(
            owned.keys().cloned().collect::<BTreeSet<_>>(),
            dect,
            "OMM users"
        );
        let passwords: BTreeMap<String, String> = self
            .sql
            .query("SELECT id::text, password::text FROM ps_auths", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for e in exts.iter().filter(|e| dect.contains(&e.number)) {
            let (uid, attrs) = owned[&e.number];
            assert_eq!(
                attrs.get("name").map(String::as_str),
                Some(broker_core::omm_name(&e.name).as_str())
            );
            assert_eq!(
                attrs.get("sipPw"),
                passwords.get(&e.number),
                "sip password of {}",
                e.number
            );
            if let Some(h) = &e.handset {
                let bound = view
                    .devices
                    .iter()
                    .find(|(_, d)| d.get("ipei") == Some(&h.ipei))
                    .map(|(_, d)| d.get("uid").cloned().unwrap_or_default());
                let holder = bound
                    .as_ref()
                    .and_then(|b| b.parse().ok())
                    .and_then(|b| view.user(b));
                assert_eq!(
                    bound,
                    Some(uid.to_string()),
                    "handset of {} is with {holder:?}",
                    e.number
                );
            }
        }
        // PBX: users for SIP and DECT, all rows complete, no orphans
        let users = self
            .column("SELECT id FROM hexidian.sip_user WHERE kind <> 'temp'")
            .await;
        let want: BTreeSet<String> = dect.union(&sip).cloned().collect();
        assert_eq!(users, want, "PBX users");
        for (table, what) in [
            ("ps_endpoints", "endpoints"),
            ("ps_aors", "aors"),
            ("ps_auths", "auths"),
        ] {
            // temporary users of unbound handsets are not GURU3's
            let q = format!(
                "SELECT id::text FROM {table} \
                 WHERE id NOT IN (SELECT id FROM hexidian.sip_user WHERE kind = 'temp')"
            );
            let ids = self.column(&q).await;
            assert_eq!(ids, want, "{what}");
        }
        for e in exts.iter().filter(|e| sip.contains(&e.number)) {
            let Kind::Sip { password, .. } = &e.kind else {
                unreachable!()
            };
            assert_eq!(
                passwords.get(&e.number),
                Some(password),
                "password of {}",
                e.number
            );
        }
        let pbx_groups = self
            .column("SELECT extension FROM hexidian.callgroup WHERE is_group")
            .await;
        assert_eq!(pbx_groups, groups, "call groups");
        let rows = self
            .sql
            .query(
                "SELECT callgroup, member, active, delay_s FROM hexidian.callgroup_member",
                &[],
            )
            .await
            .unwrap();
        let mut pbx: BTreeMap<String, BTreeSet<(String, bool, i32)>> = BTreeMap::new();
        for r in rows {
            pbx.entry(r.get(0))
                .or_default()
                .insert((r.get(1), r.get(2), r.get(3)));
        }
        let mut truth: BTreeMap<String, BTreeSet<(String, bool, i32)>> = BTreeMap::new();
        for e in &exts {
            let m = self.guru3.members(&e.number);
            if !m.is_empty() {
                truth.insert(
                    e.number.clone(),
                    m.iter()
                        .map(|m| (m.extension.clone(), m.active, m.delay as i32))
                        .collect(),
                );
            }
        }
        assert_eq!(pbx, truth, "member lists");
        // the broker's mirror knows every extension GURU3 has, and nothing else
        let mirror = self.column("SELECT number FROM hexidian.desired").await;
        let all: BTreeSet<String> = exts.iter().map(|e| e.number.clone()).collect();
        assert!(
            all.is_subset(&mirror),
            "mirror misses {:?}",
            all.difference(&mirror).collect::<Vec<_>>()
        );
    }

    /// `(done, ignored, dead)` in the journal.
    pub async fn journal(&self) -> (i64, i64, i64) {
        let r = self
            .sql
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'ignored'), \
                 count(*) FILTER (WHERE status = 'dead') FROM hexidian.journal",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    }
}

/// GET over plain HTTP/1.1 (the admin listener): `(status, body)`.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    crate::http(addr, "GET", path, &[], "").await
}

/// A small xorshift generator for crash points (seed printed for reproduction).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `HEXIDIAN_TEST_SEED` when set (to replay a run), else at
    /// random; the seed is printed either way.
    #[allow(clippy::disallowed_methods)] // a test's one setting, for reproduction
    pub fn seeded() -> Self {
        let seed = match std::env::var("HEXIDIAN_TEST_SEED") {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .expect("HEXIDIAN_TEST_SEED is a number"),
            Err(_) => {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).unwrap();
                u64::from_le_bytes(b)
            }
        } | 1;
        eprintln!("test seed: {seed} (HEXIDIAN_TEST_SEED={seed} replays it)");
        Self(seed)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
