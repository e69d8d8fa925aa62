use asterisk_realtime::{Schema, Store};

use crate::{Flavor, env, env_with, ext, rows, sip};

#[tokio::test]
async fn legacy_schema_works_with_the_same_statements() {
    let e = env_with(Flavor::Legacy, |c| c).await;
    assert_eq!(e.store.schema(), Schema::Legacy);
    e.store
        .upsert_user(sip("2001", "Lena", "Secret123"))
        .await
        .unwrap();
    assert_eq!(rows(&e.sql, "2001").await.len(), 3);
    e.store.rename(ext("2001"), ext("2002")).await.unwrap();
    assert_eq!(rows(&e.sql, "2002").await.len(), 3);
    // ids longer than the legacy varchar(40) are refused before SQL
    let long = "1".repeat(32);
    assert!(
        e.store
            .upsert_user(sip(&long, "x", "Secret123"))
            .await
            .is_ok(),
        "32 digits fit into 40"
    );
}

#[tokio::test]
async fn modern_schema_is_detected() {
    let e = env().await;
    assert_eq!(e.store.schema(), Schema::Modern);
}

#[tokio::test]
async fn database_guards_that_the_statements_rely_on() {
    let e = env().await;
    // a text-typed bind into an enum column is refused (42804): enum values are never text binds
    let err = e
        .sql
        .execute(
            "INSERT INTO ps_aors (id, remove_existing) VALUES ('1', $1::text)",
            &[&"yes"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42804");
    // caller ids longer than 40 characters fail instead of being truncated (22001)
    let err = e
        .sql
        .execute(
            "INSERT INTO ps_endpoints (id, callerid) VALUES ('1', $1)",
            &[&"x".repeat(41)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22001");
    // duplicate ids fail on the ps_*_id_key constraint (23505)
    e.sql
        .execute("INSERT INTO ps_auths (id) VALUES ('1')", &[])
        .await
        .unwrap();
    let err = e
        .sql
        .execute("INSERT INTO ps_auths (id) VALUES ('1')", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    assert_eq!(
        err.as_db_error().unwrap().constraint(),
        Some("ps_auths_id_key")
    );
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_missing_asterisk_schema_is_reported() {
    let e = env().await;
    // a second store on the same database finds the migrations applied
    let (again, driver) = Store::connect(asterisk_realtime::Config::new(&e.db.url()).unwrap())
        .await
        .unwrap();
    tokio::spawn(driver.run());
    assert_eq!(again.schema(), Schema::Modern);
    let versions: i64 = e
        .sql
        .query_one("SELECT count(*) FROM hexidian.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        versions, 4,
        "each of the PBX ledger's four migrations applied once"
    );
    // a database without Asterisk's tables is a clear schema error
    let empty = hexidian_testkit::pg::TestDb::new().await;
    let err = Store::connect(asterisk_realtime::Config::new(&empty.url()).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, asterisk_realtime::Error::Schema(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("ps_endpoints"));
}

#[tokio::test]
async fn a_read_only_connect_migrates_nothing_and_says_what_is_pending() {
    let db = hexidian_testkit::pg::TestDb::new().await;
    let sql = db.connect().await;
    let ddl = hexidian_testkit::fixtures_dir().join("sql/asterisk-modern.sql");
    sql.batch_execute(&std::fs::read_to_string(ddl).unwrap())
        .await
        .unwrap();
    let config = asterisk_realtime::Config::new(&db.url()).unwrap();
    let (store, driver) = Store::connect(config.clone().apply_migrations(false))
        .await
        .unwrap();
    tokio::spawn(driver.run());
    assert_eq!(store.pending_migrations().await.unwrap().len(), 4);
    let schema: bool = sql
        .query_one("SELECT to_regnamespace('hexidian') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!schema, "nothing was created");
    // the reader role gets the routing views, and only them, when migrations run
    sql.batch_execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ast_reader_t') \
         THEN CREATE ROLE ast_reader_t; END IF; END $$",
    )
    .await
    .unwrap();
    let (store, driver) = Store::connect(config.routing_reader(Some("ast_reader_t".into())))
        .await
        .unwrap();
    tokio::spawn(driver.run());
    assert!(store.pending_migrations().await.unwrap().is_empty());
    let grants: Vec<String> = sql
        .query(
            "SELECT table_name::text FROM information_schema.role_table_grants \
             WHERE grantee = 'ast_reader_t' AND table_schema = 'hexidian' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(grants, ["callgroup_route", "route"]);
    // a hostile role name is refused, not spliced into SQL
    let err = Store::connect(
        asterisk_realtime::Config::new(&db.url())
            .unwrap()
            .routing_reader(Some("x\"; DROP TABLE ps_aors; --".into())),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("routing reader role"), "{err}");
}

#[tokio::test]
async fn a_role_without_grants_is_told_what_it_lacks_and_refused_as_a_set_up_fault() {
    let e = env().await;
    // a role of this database only (roles belong to the server; the name keeps tests apart)
    let role = format!("nogrants_{}", e.db.name());
    e.sql
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let (store, driver) = Store::connect(
        asterisk_realtime::Config::new(&e.db.url_as(&role))
            .unwrap()
            .apply_migrations(false),
    )
    .await
    .unwrap();
    tokio::spawn(driver.run());
    let missing = store
        .missing_privileges(Some("no_such_reader"))
        .await
        .unwrap();
    let text: Vec<String> = missing.iter().map(ToString::to_string).collect();
    for wanted in [
        "role no_such_reader does not exist (hexidian-roles.sql creates it)".to_owned(),
        format!("{role} lacks DELETE on ps_contacts: GRANT DELETE ON ps_contacts TO {role};"),
        format!("{role} lacks INSERT on ps_endpoints: GRANT INSERT ON ps_endpoints TO {role};"),
        format!("{role} lacks USAGE on hexidian: GRANT USAGE ON SCHEMA hexidian TO {role};"),
        format!(
            "{role} lacks SELECT on hexidian.sip_user: GRANT SELECT ON hexidian.sip_user TO {role};"
        ),
    ] {
        assert!(text.contains(&wanted), "{wanted} not in {text:#?}");
    }
    // the superuser lacks nothing
    assert_eq!(e.store.missing_privileges(None).await.unwrap(), []);

    // writing as that role: PostgreSQL's message, SQLSTATE and what hexidian was doing
    let err = store
        .upsert_user(sip("2001", "Lena", "Secret123"))
        .await
        .unwrap_err();
    assert!(err.is_setup_fault(), "{err:?}");
    assert_eq!(err.code(), Some("42501"));
    assert_eq!(
        err.to_string(),
        "permission denied for schema hexidian (42501) while preparing hexidian's statements"
    );
    // with hexidian's own tables granted, the PJSIP table is what is missing, and said so
    e.sql
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA hexidian TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA hexidian TO {role}"
        ))
        .await
        .unwrap();
    let err = store
        .upsert_user(sip("2001", "Lena", "Secret123"))
        .await
        .unwrap_err();
    assert!(err.is_setup_fault(), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("permission denied for table ps_")
            && shown.ends_with("(42501) while writing user 2001"),
        "{shown}"
    );
}
