//! `asterisk-realtime` against a real, throwaway PostgreSQL with the Asterisk test schema.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

mod callgroups;
mod faults;
mod routing;
mod schema;
mod sync;
mod users;

use asterisk_realtime::{Config, Extension, Kind, SipPassword, Store, UserSpec};
use hexidian_testkit::pg::TestDb;

pub(crate) enum Flavor {
    Modern,
    Legacy,
}

pub(crate) struct Env {
    pub(crate) db: TestDb,
    pub(crate) store: Store,
    pub(crate) sql: tokio_postgres::Client,
}

pub(crate) async fn env_with(flavor: Flavor, config: impl FnOnce(Config) -> Config) -> Env {
    hexidian_testkit::init_tracing();
    let db = TestDb::new().await;
    let sql = db.connect().await;
    let ddl = match flavor {
        Flavor::Modern => "asterisk-modern.sql",
        Flavor::Legacy => "asterisk-legacy.sql",
    };
    let path = hexidian_testkit::fixtures_dir().join("sql").join(ddl);
    sql.batch_execute(&std::fs::read_to_string(path).unwrap())
        .await
        .unwrap();
    let (store, driver) = Store::connect(config(Config::new(&db.url()).unwrap()))
        .await
        .unwrap();
    tokio::spawn(driver.run());
    Env { db, store, sql }
}

pub(crate) async fn env() -> Env {
    env_with(Flavor::Modern, |c| c).await
}

pub(crate) fn ext(s: &str) -> Extension {
    s.parse().unwrap()
}

pub(crate) fn sip(number: &str, name: &str, password: &str) -> UserSpec {
    UserSpec {
        premium: false,
        routing: Default::default(),
        extension: ext(number),
        kind: Kind::Sip,
        name: name.into(),
        password: Some(password.parse().unwrap()),
    }
}

pub(crate) fn dect(number: &str, name: &str) -> UserSpec {
    UserSpec {
        premium: false,
        routing: Default::default(),
        extension: ext(number),
        kind: Kind::Dect,
        name: name.into(),
        password: None,
    }
}

pub(crate) fn pw(s: &str) -> SipPassword {
    s.parse().unwrap()
}

/// All `ps_*` rows of an id as text, for comparisons.
pub(crate) async fn rows(sql: &tokio_postgres::Client, id: &str) -> Vec<String> {
    const QUERIES: [&str; 3] = [
        "SELECT 'ps_endpoints: ' || concat_ws('|', id, aors, auth, context, disallow, allow, direct_media::text, dtmf_mode::text, callerid, rtp_symmetric::text, force_rport::text, rewrite_contact::text) FROM ps_endpoints WHERE id = $1",
        "SELECT 'ps_aors: ' || concat_ws('|', id, max_contacts::text, remove_existing::text, qualify_frequency::text) FROM ps_aors WHERE id = $1",
        "SELECT 'ps_auths: ' || concat_ws('|', id, auth_type::text, username, password) FROM ps_auths WHERE id = $1",
    ];
    let mut out = Vec::new();
    for q in QUERIES {
        for r in sql.query(q, &[&id]).await.unwrap() {
            out.push(r.get::<_, String>(0));
        }
    }
    out
}

pub(crate) async fn count(sql: &tokio_postgres::Client, table: &str) -> i64 {
    let q = match table {
        "ps_endpoints" => "SELECT count(*) FROM ps_endpoints",
        "hexidian.sip_user" => "SELECT count(*) FROM hexidian.sip_user",
        other => panic!("no count query for {other}"),
    };
    sql.query_one(q, &[]).await.unwrap().get(0)
}
