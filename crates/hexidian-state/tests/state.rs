//! The state tables against a real, throwaway PostgreSQL: mirror documents, the journal,
//! binds and the outbox, and the move of their migrations out of the PBX ledger.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

use asterisk_realtime::Extension;
use hexidian_state::{Desired, JournalEntry, JournalStatus, StateChange, Store};
use hexidian_testkit::pg::TestDb;

struct Env {
    db: TestDb,
    pbx: asterisk_realtime::Store,
    store: Store,
    sql: tokio_postgres::Client,
}

async fn asterisk_db() -> (TestDb, tokio_postgres::Client) {
    hexidian_testkit::init_tracing();
    let db = TestDb::new().await;
    let sql = db.connect().await;
    let ddl = hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql");
    sql.batch_execute(&std::fs::read_to_string(ddl).unwrap())
        .await
        .unwrap();
    (db, sql)
}

/// The PBX store and the state store on one session, as hexidian runs them.
async fn env() -> Env {
    let (db, sql) = asterisk_db().await;
    let (pbx, driver) =
        asterisk_realtime::Store::connect(asterisk_realtime::Config::new(&db.url()).unwrap())
            .await
            .unwrap();
    tokio::spawn(driver.run());
    let store = Store::attach(pbx.session().clone(), true).await.unwrap();
    Env {
        db,
        pbx,
        store,
        sql,
    }
}

fn ext(s: &str) -> Extension {
    s.parse().unwrap()
}

fn row(id: i64, status: JournalStatus, payload: &str) -> StateChange {
    StateChange::Journal(JournalEntry {
        id,
        kind: "UPDATE_EXTENSION".into(),
        number: Some("2001".into()),
        status,
        attempts: 1,
        reason: (status == JournalStatus::Dead).then(|| "bad \0 input".to_owned()),
        payload: payload.into(),
        secrets: None,
    })
}

fn put(n: &str, doc: &str) -> StateChange {
    StateChange::Put {
        number: ext(n),
        doc: doc.into(),
    }
}

#[tokio::test]
async fn documents_and_journal_commit_together_and_later_changes_win() {
    let e = env().await;
    e.store
        .commit_state(&[
            put("2001", r#"{"v": 1}"#),
            put("2002", r#"{"v": 1}"#),
            put(
                "2001",
                r#"{"v": 2, "name": "'; DROP TABLE hexidian.journal; --"}"#,
            ),
            StateChange::Remove(ext("2002")),
            row(52001, JournalStatus::Done, r#"{"id": 52001}"#),
            row(52002, JournalStatus::Dead, "{\"name\": \"nul\\u0000\"}"),
            row(
                52001,
                JournalStatus::Done,
                r#"{"id": 52001, "again": true}"#,
            ),
        ])
        .await
        .unwrap();
    let docs = e.store.load_desired().await.unwrap();
    assert_eq!(
        docs,
        [Desired {
            number: "2001".to_owned(),
            doc: r#"{"v": 2, "name": "'; DROP TABLE hexidian.journal; --"}"#.to_owned(),
            seen: None,
        }]
    );
    assert_eq!(e.store.journal_counts().await.unwrap(), (1, 0, 1));
    let dead = e.store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.as_deref(), Some("bad \u{fffd} input"));
    assert!(
        !format!("{dead:?}").contains("nul"),
        "payloads stay out of Debug"
    );
    // a failed commit leaves nothing behind
    let bad = StateChange::Journal(JournalEntry {
        id: 1,
        kind: "X".into(),
        number: None,
        status: JournalStatus::Done,
        attempts: u32::MAX,
        reason: None,
        payload: String::new(),
        secrets: None,
    });
    let r = e
        .store
        .commit_state(&[put("2003", "{}"), bad, put("2004", "{}")])
        .await;
    assert!(
        r.is_ok(),
        "attempts beyond the column's range are stored capped: {r:?}"
    );
    assert_eq!(e.store.load_desired().await.unwrap().len(), 3);
    // the PBX store shares the session
    assert_eq!(e.pbx.sync_state().await.unwrap(), (0, false));
    e.pbx.begin_sync().await.unwrap();
    assert_eq!(e.pbx.sync_state().await.unwrap(), (1, true));
}

#[tokio::test]
async fn a_commit_is_atomic() {
    let e = env().await;
    // a journal status outside the CHECK constraint cannot be built through the API, so break
    // the table instead: the whole commit must roll back
    e.sql
        .batch_execute("ALTER TABLE hexidian.desired ADD CONSTRAINT short CHECK (length(doc) < 10)")
        .await
        .unwrap();
    let r = e
        .store
        .commit_state(&[
            row(7, JournalStatus::Done, "{}"),
            StateChange::Put {
                number: ext("2001"),
                doc: "x".repeat(20),
            },
        ])
        .await;
    assert!(r.is_err());
    assert_eq!(e.store.journal_counts().await.unwrap(), (0, 0, 0));
}

#[tokio::test]
async fn promised_binds_become_outbox_entries_once() {
    let e = env().await;
    let id = e
        .store
        .add_bind(7, &ext("01001234"), &ext("2001"))
        .await
        .unwrap();
    assert_eq!(e.store.pending_binds().await.unwrap().len(), 1);
    e.store
        .finish_bind(
            id,
            "01842 0093371 6",
            "351B50AA981AAB5CF7FE6151B2719394",
            &ext("2001"),
        )
        .await
        .unwrap();
    // a replay after a crash queues nothing twice
    e.store
        .finish_bind(
            id,
            "01842 0093371 6",
            "351B50AA981AAB5CF7FE6151B2719394",
            &ext("2001"),
        )
        .await
        .unwrap();
    assert!(e.store.pending_binds().await.unwrap().is_empty());
    let out = e.store.pending_assigns(10).await.unwrap();
    assert_eq!(out.len(), 1);
    assert!(
        !format!("{out:?}").contains("351B50AA"),
        "the UAK stays out of Debug"
    );
    e.store
        .finish_assign(out[0].id, false, "Processing error: Extension not known.")
        .await
        .unwrap();
    assert!(
        e.store.pending_assigns(10).await.unwrap().is_empty(),
        "a NAK is final"
    );
    // an answered ASSIGN_HANDSET keeps no key, and goes with the old journal rows
    let uak: String = e
        .sql
        .query_one("SELECT uak FROM hexidian.assign_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(uak, "", "the UAK is wiped once GURU3 answered");
    assert_eq!(
        e.store
            .prune_outbox(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "younger than the limit"
    );
    assert_eq!(
        e.store
            .prune_outbox(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_handset_has_one_promised_bind_and_a_bind_can_be_ended() {
    let e = env().await;
    let first = e
        .store
        .add_bind(7, &ext("01001234"), &ext("2001"))
        .await
        .unwrap();
    // a re-dial after a commit that was reported as failed finds the same bind
    let again = e
        .store
        .add_bind(7, &ext("01001234"), &ext("2002"))
        .await
        .unwrap();
    assert_eq!(first, again);
    let binds = e.store.pending_binds().await.unwrap();
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0].extension, "2002", "the latest call's target");
    let other = e
        .store
        .add_bind(8, &ext("01001235"), &ext("2003"))
        .await
        .unwrap();
    assert_ne!(other, first);
    e.store.drop_bind(first).await.unwrap();
    let left: Vec<i64> = e
        .store
        .pending_binds()
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [other]);
    assert!(e.store.pending_assigns(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn old_applied_journal_rows_are_pruned_and_dead_letters_kept() {
    let e = env().await;
    e.store
        .commit_state(&[
            row(1, JournalStatus::Done, ""),
            row(2, JournalStatus::Ignored, ""),
            row(3, JournalStatus::Dead, "{}"),
            row(4, JournalStatus::Done, ""),
        ])
        .await
        .unwrap();
    // rows 1–3 were written a week ago
    e.sql
        .execute(
            "UPDATE hexidian.journal SET updated_at = now() - interval '8 days' WHERE id <= 3",
            &[],
        )
        .await
        .unwrap();
    let week = std::time::Duration::from_secs(7 * 86400);
    assert_eq!(e.store.prune_journal(week).await.unwrap(), 2);
    assert_eq!(e.store.journal_counts().await.unwrap(), (1, 0, 1));
    assert_eq!(e.store.prune_journal(week).await.unwrap(), 0);
}

#[tokio::test]
async fn a_statement_stuck_behind_a_lock_ends_with_the_operation_timeout() {
    let e = env().await;
    let cfg = asterisk_realtime::Config::from_pg(e.db.config())
        .operation_timeout(std::time::Duration::from_millis(1500))
        .lock_timeout(std::time::Duration::from_secs(600));
    let (session, driver) = asterisk_realtime::Session::connect(&cfg).await.unwrap();
    tokio::spawn(driver.run());
    let store = Store::attach(session, false).await.unwrap();
    // another session holds the journal: a read waits for it
    let mut holder = e.db.connect().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE hexidian.journal IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), store.dead_letters(10))
        .await
        .expect("the server's statement_timeout ends the wait");
    let err = r.unwrap_err();
    assert_eq!(err.code(), Some("57014"), "{err:?}");
    tx.rollback().await.unwrap();
}

/// The old PBX ledger's versions 2–4, as a database migrated before the split has them.
const OLD_V2_TO_V4: &str = r"
CREATE TABLE hexidian.desired (number text PRIMARY KEY, doc text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE hexidian.journal (id bigint PRIMARY KEY, kind text NOT NULL,
    status text NOT NULL CHECK (status IN ('done', 'ignored', 'dead')),
    attempts integer NOT NULL DEFAULT 1, reason text, payload text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX journal_status_idx ON hexidian.journal (status, id);
CREATE TABLE hexidian.handset_bind (id bigserial PRIMARY KEY, ppn integer NOT NULL,
    temp text NOT NULL, extension text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE hexidian.assign_outbox (id bigserial PRIMARY KEY, ipei text NOT NULL,
    uak text NOT NULL, extension text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ok', 'nak')),
    text text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX assign_outbox_pending_idx ON hexidian.assign_outbox (id) WHERE status = 'pending';
CREATE INDEX journal_prune_idx ON hexidian.journal (updated_at) WHERE status <> 'dead';
INSERT INTO hexidian.journal (id, kind, status, payload) VALUES (41, 'UPDATE_EXTENSION', 'done', '');
INSERT INTO hexidian.schema_migrations (version, description) VALUES
    (2, 'broker state'), (3, 'unbound handsets'), (4, 'journal pruning index');
";

#[tokio::test]
async fn a_database_migrated_before_the_split_keeps_its_rows_and_runs_nothing_twice() {
    let (db, sql) = asterisk_db().await;
    let config = asterisk_realtime::Config::new(&db.url()).unwrap();
    let (pbx, driver) = asterisk_realtime::Store::connect(config.clone())
        .await
        .unwrap();
    tokio::spawn(driver.run());
    sql.batch_execute(OLD_V2_TO_V4).await.unwrap();
    // read-only, the three are known as applied through the old ledger; only the ones made
    // after the split are pending
    let read_only = Store::attach(pbx.session().clone(), false).await.unwrap();
    let pending: Vec<i32> = read_only
        .pending_migrations()
        .await
        .unwrap()
        .iter()
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(pending, [4, 5, 6, 7, 8]);
    let store = Store::attach(pbx.session().clone(), true).await.unwrap();
    assert_eq!(store.pending_migrations().await.unwrap(), []);
    assert_eq!(store.journal_counts().await.unwrap(), (1, 0, 0));
    let adopted: Vec<i32> = sql
        .query(
            "SELECT version FROM hexidian.state_migrations ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(adopted, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(pbx.pending_migrations().await.unwrap(), []);
}

#[tokio::test]
async fn a_fresh_database_gets_the_state_tables_from_this_ledger_only() {
    let (db, sql) = asterisk_db().await;
    let (session, driver) =
        asterisk_realtime::Session::connect(&asterisk_realtime::Config::new(&db.url()).unwrap())
            .await
            .unwrap();
    tokio::spawn(driver.run());
    // no PBX ledger at all: a state-only user of the database
    let read_only = Store::attach(session.clone(), false).await.unwrap();
    assert_eq!(read_only.pending_migrations().await.unwrap().len(), 8);
    let store = Store::attach(session.clone(), true).await.unwrap();
    assert_eq!(store.pending_migrations().await.unwrap(), []);
    // a second attach (another process) finds everything applied
    Store::attach(session, true).await.unwrap();
    let pbx_ledger: bool = sql
        .query_one(
            "SELECT to_regclass('hexidian.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!pbx_ledger, "the state ledger creates nothing of the PBX's");
    assert_eq!(store.journal_counts().await.unwrap(), (0, 0, 0));
}

#[tokio::test]
async fn seen_epochs_are_recorded_beside_unchanged_documents() {
    let e = env().await;
    let seen = |n: &str, s: i64, m: i64| StateChange::Seen {
        number: ext(n),
        seen_epoch: s,
        members_epoch: m,
    };
    e.store
        .commit_state(&[put("2001", "{}"), put("2002", "{}"), put("2003", "{}")])
        .await
        .unwrap();
    let before = xmin(&e.sql).await;
    // resync 1: 2001 and 2002 re-sent unchanged (2002's list too), over two commits
    e.store
        .commit_state(&[seen("2001", 1, 0), seen("2002", 1, 1)])
        .await
        .unwrap();
    e.store.commit_state(&[seen("2002", 1, 1)]).await.unwrap();
    assert_eq!(xmin(&e.sql).await, before, "no document rewritten");
    let got = seen_marks(&e.store).await;
    assert_eq!(
        got,
        [
            ("2001".to_owned(), Some((1, 0))),
            ("2002".to_owned(), Some((1, 1))),
            ("2003".to_owned(), None)
        ]
    );
    // resync 2: the rows of resync 1 are of no use any more
    e.store
        .commit_state(&[seen("2003", 2, 0), StateChange::Remove(ext("2001"))])
        .await
        .unwrap();
    let got = seen_marks(&e.store).await;
    assert_eq!(
        got,
        [("2002".to_owned(), None), ("2003".to_owned(), Some((2, 0)))]
    );
    let rows: i64 = e
        .sql
        .query_one("SELECT count(*) FROM hexidian.desired_seen", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

/// Row versions of the mirror documents, to tell a rewrite from a read.
async fn xmin(sql: &tokio_postgres::Client) -> Vec<String> {
    sql.query(
        "SELECT xmin::text FROM hexidian.desired ORDER BY number",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_number_and_whether_a_later_message_made_them_moot() {
    let e = env().await;
    let entry = |id: i64, number: Option<&str>, status: JournalStatus| {
        StateChange::Journal(JournalEntry {
            id,
            kind: "UPDATE_EXTENSION".into(),
            number: number.map(str::to_owned),
            status,
            attempts: 3,
            reason: (status == JournalStatus::Dead).then(|| "EPerm".to_owned()),
            payload: "{}".into(),
            secrets: None,
        })
    };
    e.store
        .commit_state(&[
            entry(10, Some("2001"), JournalStatus::Dead),
            entry(11, Some("2002"), JournalStatus::Dead),
            entry(12, None, JournalStatus::Dead),
            entry(13, Some("2001"), JournalStatus::Done),
            // an earlier success does not make a later dead letter moot
            entry(9, Some("2002"), JournalStatus::Done),
        ])
        .await
        .unwrap();
    let list = e.store.dead_letter_list().await.unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|d| (d.id, d.number.as_deref(), d.attempts, d.superseded))
        .collect();
    assert_eq!(
        got,
        [
            (10, Some("2001"), 3, true),
            (11, Some("2002"), 3, false),
            (12, None, 3, false)
        ]
    );
    assert_eq!(list[0].reason.as_deref(), Some("EPerm"));
    assert!(
        list[0].first_seen.starts_with("20") && list[0].first_seen.ends_with('Z'),
        "{}",
        list[0].first_seen
    );
    assert!(list[0].updated_at >= list[0].first_seen);
}

#[tokio::test]
async fn a_dead_letter_keeps_its_secrets_apart_until_it_is_applied() {
    let e = env().await;
    let entry = |id: i64, status: JournalStatus, secrets: Option<&str>| {
        StateChange::Journal(JournalEntry {
            id,
            kind: "UPDATE_EXTENSION".into(),
            number: Some("2001".into()),
            status,
            attempts: 1,
            reason: None,
            payload: r#"{"data": {"password": "<redacted>"}}"#.into(),
            secrets: secrets.map(broker_core::model::Secret::new),
        })
    };
    let secret = r#"{"/data/password": "e1vdxzqL"}"#;
    e.store
        .commit_state(&[entry(20, JournalStatus::Dead, Some(secret))])
        .await
        .unwrap();
    let (j, superseded) = e.store.dead_letter(20).await.unwrap().unwrap();
    assert_eq!(j.secrets.as_ref().map(|s| s.expose()), Some(secret));
    assert!(!superseded);
    assert!(!format!("{j:?}").contains("e1vdxzqL"));
    // the listing and /readyz's rows never carry them
    let newest = e.store.dead_letters(10).await.unwrap();
    assert!(newest.iter().all(|j| j.secrets.is_none()));
    // a replay that succeeds leaves no secret behind
    e.store
        .commit_state(&[entry(20, JournalStatus::Done, None)])
        .await
        .unwrap();
    assert!(e.store.dead_letter(20).await.unwrap().is_none());
    let left: i64 = e
        .sql
        .query_one(
            "SELECT count(*) FROM hexidian.journal WHERE secrets IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // a dead letter behind a later applied message for its number is superseded
    e.store
        .commit_state(&[
            entry(30, JournalStatus::Dead, Some(secret)),
            entry(31, JournalStatus::Done, None),
        ])
        .await
        .unwrap();
    assert!(e.store.dead_letter(30).await.unwrap().unwrap().1);
    assert!(e.store.dead_letter(31).await.unwrap().is_none());
}

/// `(number, recorded epochs)` of every stored mirror document.
async fn seen_marks(store: &Store) -> Vec<(String, Option<(i64, i64)>)> {
    store
        .load_desired()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.number, d.seen))
        .collect()
}

mod leadership {
    //! Active and standby on one database: the lock, the epoch, the lease, the fence.

    use std::time::Duration;

    use asterisk_realtime::Error;
    use hexidian_state::leader::{self, Attempt, Candidate, Lost};

    use super::*;

    const LEASE: Duration = Duration::from_secs(2);

    /// An instance's session: the PBX and state stores as hexidian runs them, named so that a
    /// new active can end its connections.
    async fn instance(db: &TestDb, name: &str) -> (asterisk_realtime::Store, Store) {
        let cfg = asterisk_realtime::Config::new(&db.url())
            .unwrap()
            .application_name(&leader::application_name(name));
        let (pbx, driver) = asterisk_realtime::Store::connect(cfg).await.unwrap();
        tokio::spawn(driver.run());
        let store = Store::attach(pbx.session().clone(), true).await.unwrap();
        (pbx, store)
    }

    fn candidate(db: &TestDb, name: &str) -> Candidate {
        Candidate::new(
            &asterisk_realtime::Config::new(&db.url()).unwrap(),
            name,
            LEASE,
        )
        .unwrap()
    }

    async fn active(c: &mut Candidate) -> leader::Lease {
        match c.attempt().await.unwrap() {
            Attempt::Active(l) => *l,
            Attempt::Standby(h) => panic!("{} is standby behind {h:?}", c.name()),
        }
    }

    async fn standby(c: &mut Candidate) -> leader::Holder {
        match c.attempt().await.unwrap() {
            Attempt::Standby(h) => h,
            Attempt::Active(l) => panic!("{} is active (epoch {})", c.name(), l.epoch()),
        }
    }

    /// Commits one journal row; the error of a refused commit (retrying while the session
    /// reconnects after its connection was ended).
    async fn write(store: &Store, id: i64) -> Result<(), Error> {
        for _ in 0..100 {
            match store
                .commit_state(&[row(id, JournalStatus::Done, "{}")])
                .await
            {
                Err(Error::Unavailable) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => return other,
            }
        }
        Err(Error::Unavailable)
    }

    #[tokio::test]
    async fn one_instance_is_active_and_another_takes_over_when_its_connection_goes() {
        let e = env().await;
        let (mut a, mut b) = (candidate(&e.db, "a"), candidate(&e.db, "b"));
        let lease_a = active(&mut a).await;
        assert_eq!(lease_a.epoch(), 1);
        let seen = standby(&mut b).await;
        assert_eq!((seen.name.as_str(), seen.epoch), ("a", 1));
        assert!(seen.renewed_ago < LEASE, "{seen:?}");
        assert!(lease_a.still_current().await);
        // a's lock connection goes (its process died): b is active at once, epoch 2
        drop(lease_a);
        let t = std::time::Instant::now();
        let lease_b = loop {
            match b.attempt().await.unwrap() {
                Attempt::Active(l) => break *l,
                Attempt::Standby(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert!(t.elapsed() < LEASE, "{:?}", t.elapsed());
        assert_eq!(lease_b.epoch(), 2);
        let row = e
            .sql
            .query_one("SELECT holder, epoch FROM hexidian.leader", &[])
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, i64>(1)),
            ("b".into(), 2)
        );
        // a comes back as standby
        assert_eq!(standby(&mut a).await.name, "b");
    }

    #[tokio::test]
    async fn an_earlier_actives_writes_are_refused_once_another_took_over() {
        let e = env().await;
        let (_pbx_a, store_a) = instance(&e.db, "a").await;
        let (mut a, mut b) = (candidate(&e.db, "a"), candidate(&e.db, "b"));
        let lease_a = active(&mut a).await;
        store_a.session().set_fence(Some(lease_a.fence()));
        write(&store_a, 1).await.unwrap();
        // a partition: a's lock connection is ended behind its back, a itself goes on
        e.sql
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'hexidian/a/lock'",
                &[],
            )
            .await
            .unwrap();
        assert!(matches!(lease_a.hold().await, Lost::Connection(_)));
        let lease_b = loop {
            match b.attempt().await.unwrap() {
                Attempt::Active(l) => break *l,
                Attempt::Standby(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let err = write(&store_a, 2).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Fenced {
                    held: 1,
                    current: 2
                }
            ),
            "{err:?}"
        );
        assert!(
            err.is_transient(),
            "a fenced message waits, it is not a dead letter"
        );
        // the evidence: every row a wrote has epoch 1 and was written before b's epoch began
        let late: i64 = e
            .sql
            .query_one(
                "SELECT count(*) FROM hexidian.journal j, hexidian.leader l \
                 WHERE j.epoch = 1 AND j.updated_at >= l.since",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(late, 0);
        let ids: Vec<i64> = e
            .sql
            .query("SELECT id FROM hexidian.journal ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, [1], "a's refused write did not land");
        // b writes under epoch 2
        let (_pbx_b, store_b) = instance(&e.db, "b").await;
        store_b.session().set_fence(Some(lease_b.fence()));
        write(&store_b, 3).await.unwrap();
        let epoch: i64 = e
            .sql
            .query_one("SELECT epoch FROM hexidian.journal WHERE id = 3", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(epoch, 2);
    }

    #[tokio::test]
    async fn a_standby_ends_an_active_that_stopped_renewing_even_inside_a_transaction() {
        let e = env().await;
        let (pbx_a, _store_a) = instance(&e.db, "a").await;
        let (mut a, mut b) = (candidate(&e.db, "a"), candidate(&e.db, "b"));
        let lease_a = active(&mut a).await;
        // a pauses inside a fenced transaction (the epoch row share-locked) and never renews
        pbx_a.session().set_fence(Some(lease_a.fence()));
        let held = pbx_a.session().clone();
        let (paused_tx, paused) = tokio::sync::oneshot::channel::<()>();
        let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
        let pauser = tokio::spawn(async move {
            let mut guard = held.lock().await.unwrap();
            let _tx = guard.transaction().await.unwrap();
            let _ = entered_tx.send(());
            let _ = paused.await;
        });
        entered.await.unwrap();
        let seen = standby(&mut b).await;
        assert_eq!(seen.name, "a");
        tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
        // the lease is old: b ends a's connections (the lock goes with them), then takes over
        let t = std::time::Instant::now();
        let lease_b = loop {
            match b.attempt().await.unwrap() {
                Attempt::Active(l) => break *l,
                Attempt::Standby(h) => {
                    assert!(h.renewed_ago > LEASE, "{h:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert!(t.elapsed() < 2 * LEASE, "{:?}", t.elapsed());
        assert_eq!(lease_b.epoch(), 2);
        // a, resumed, finds its lease gone
        let _ = paused_tx.send(());
        pauser.await.unwrap();
        assert!(!lease_a.still_current().await);
        assert!(matches!(
            lease_a.hold().await,
            Lost::Connection(_) | Lost::Superseded
        ));
    }
}
