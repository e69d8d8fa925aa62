//! hexidian's own schema (`hexidian.*`), created and upgraded by versioned migrations.

use tokio_postgres::{Client, Transaction};

use crate::error::{Doing, Error, Result};

/// One versioned schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, unique within its ledger; applied in order.
    pub version: i32,
    /// What it does (logged, stored in the ledger, listed by `pending`).
    pub description: &'static str,
    /// The DDL, run with `batch_execute` in the ledger's transaction.
    pub sql: &'static str,
}

/// A migration ledger: a table recording which [`Migration`]s a database has, and the list
/// this build knows. Every ledger takes one advisory lock, so that migrators of all ledgers
/// (several hexidian processes, or the PBX tables and the broker state) run one at a time.
/// The statements are fixed texts of the ledger's owner, never built from input.
#[derive(Debug, Clone, Copy)]
pub struct Ledger {
    /// Creates the schema and the ledger table if missing (and may adopt older records).
    pub bootstrap: &'static str,
    /// Whether the ledger table exists: one row, one boolean.
    pub exists: &'static str,
    /// The applied versions: one `integer` column.
    pub applied: &'static str,
    /// Records a version: parameters `$1 integer` (version) and `$2 text` (description).
    pub record: &'static str,
    /// Records of an older ledger that `bootstrap` adopts, for [`pending`](Self::pending)
    /// while this ledger's table does not exist yet: (whether the older ledger exists: one
    /// boolean, the versions it holds for these migrations: one `integer` column).
    pub adopted: Option<(&'static str, &'static str)>,
    /// The migrations, in ascending version order.
    pub migrations: &'static [Migration],
}

/// Serialises concurrent migrators of every ledger (a constant advisory-lock key).
const LOCK: &str = "SELECT pg_advisory_xact_lock(7460271942)";

impl Ledger {
    /// Applies the missing migrations inside `tx` (the caller commits). A database with a
    /// version newer than this build knows is refused.
    pub async fn apply(&self, tx: &Transaction<'_>) -> Result<()> {
        tx.batch_execute(LOCK)
            .await
            .doing(|| "taking the migration lock".into())?;
        tx.batch_execute(self.bootstrap)
            .await
            .doing(|| "creating schema hexidian and its migration ledger".into())?;
        let applied: Vec<i32> = tx
            .query(self.applied, &[])
            .await
            .doing(|| "reading the migration ledger".into())?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for m in self.migrations {
            if applied.contains(&m.version) {
                continue;
            }
            tracing::info!(
                version = m.version,
                description = m.description,
                "applying hexidian schema migration"
            );
            tx.batch_execute(m.sql)
                .await
                .doing(|| format!("applying migration {} ({})", m.version, m.description))?;
            tx.execute(self.record, &[&m.version, &m.description])
                .await
                .doing(|| format!("recording migration {}", m.version))?;
        }
        let newest = self.migrations.last().map_or(0, |m| m.version);
        if let Some(max) = applied.iter().max() {
            if *max > newest {
                return Err(Error::Schema(format!(
                    "database has hexidian schema version {max}, newer than this build"
                )));
            }
        }
        Ok(())
    }

    /// Migrations this build has and the database lacks (reads only).
    pub async fn pending(&self, client: &Client) -> Result<Vec<(i32, &'static str)>> {
        let present: bool = client.query_one(self.exists, &[]).await?.get(0);
        let query = match self.adopted {
            _ if present => Some(self.applied),
            Some((older, versions)) => {
                let older: bool = client.query_one(older, &[]).await?.get(0);
                older.then_some(versions)
            }
            None => None,
        };
        let applied: Vec<i32> = match query {
            Some(q) => client
                .query(q, &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect(),
            None => Vec::new(),
        };
        Ok(self
            .migrations
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| (m.version, m.description))
            .collect())
    }
}

/// The PBX tables' ledger, `hexidian.schema_migrations`. Versions 2 to 4 were the broker's
/// state tables, which `hexidian-state` now keeps in a ledger of its own; databases that
/// applied them keep those records, and the next PBX migration is 6.
pub(crate) const PBX: Ledger = Ledger {
    bootstrap: "DO $s$ BEGIN IF to_regnamespace('hexidian') IS NULL THEN CREATE SCHEMA hexidian; END IF; END $s$; \
     CREATE TABLE IF NOT EXISTS hexidian.schema_migrations ( \
         version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    exists: "SELECT to_regclass('hexidian.schema_migrations') IS NOT NULL",
    applied: "SELECT version FROM hexidian.schema_migrations ORDER BY version",
    record: "INSERT INTO hexidian.schema_migrations (version, description) VALUES ($1, $2)",
    adopted: None,
    migrations: &[
        Migration {
            version: 1,
            description: "ownership, sync state, call groups and routes",
            sql: V1,
        },
        Migration {
            version: 5,
            description: "per-user routing: forwards, trunks, call waiting, dial-out, caller display",
            sql: V5,
        },
        Migration {
            version: 6,
            description: "call-group targets in linear time (shortest delays by hop layers, not by paths)",
            sql: V6,
        },
        Migration {
            version: 7,
            description: "resync marks as one row of ids per batch (an unchanged user is not rewritten)",
            sql: V7,
        },
    ],
};

const V1: &str = r"
CREATE TABLE hexidian.sync_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    current_epoch bigint  NOT NULL DEFAULT 0,
    in_progress   boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO hexidian.sync_state DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE TABLE hexidian.sip_user (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9]{1,32}$'),
    kind         text NOT NULL CHECK (kind IN ('sip', 'dect', 'temp')),
    display_name text NOT NULL DEFAULT '',
    seen_epoch   bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hexidian.callgroup (
    extension     text PRIMARY KEY CHECK (extension ~ '^[0-9]{1,32}$'),
    name          text NOT NULL DEFAULT '',
    short_name    text NOT NULL DEFAULT '' CHECK (char_length(short_name) <= 3),
    is_group      boolean NOT NULL DEFAULT false,
    group_epoch   bigint NOT NULL DEFAULT 0,
    members_epoch bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hexidian.callgroup_member (
    callgroup text NOT NULL REFERENCES hexidian.callgroup (extension) ON UPDATE CASCADE ON DELETE CASCADE,
    member    text NOT NULL CHECK (member ~ '^[0-9]{1,32}$'),
    active    boolean NOT NULL DEFAULT true,
    delay_s   integer NOT NULL DEFAULT 0 CHECK (delay_s BETWEEN 0 AND 600),
    PRIMARY KEY (callgroup, member),
    CHECK (member <> callgroup)
);
CREATE INDEX callgroup_member_member_idx ON hexidian.callgroup_member (member);

-- leaves reachable from a group with their earliest cumulative delay; paused members and
-- loops are skipped, depth is limited to 8
CREATE FUNCTION hexidian.callgroup_targets(root text)
RETURNS TABLE (target text, delay_s integer)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk (node, delay_s, depth, path) AS (
        SELECT root, 0, 0, ARRAY[root]
        UNION ALL
        SELECT m.member, w.delay_s + m.delay_s, w.depth + 1, w.path || m.member
          FROM walk w
          JOIN hexidian.callgroup_member m ON m.callgroup = w.node AND m.active
         WHERE w.depth < 8 AND m.member <> ALL (w.path)
    )
    SELECT w.node, min(w.delay_s)::integer
      FROM walk w
      LEFT JOIN hexidian.callgroup g ON g.extension = w.node
     WHERE g.extension IS NULL OR NOT g.is_group
     GROUP BY w.node
$$;

CREATE TABLE hexidian.callgroup_route (
    id         text PRIMARY KEY REFERENCES hexidian.callgroup (extension) ON UPDATE CASCADE ON DELETE CASCADE,
    name       text NOT NULL,
    short_name text NOT NULL,
    dialstring text NOT NULL
);
";

/// What the dialplan needs per user besides the PJSIP rows. The columns live on the ownership
/// row, so a rename, a delete and a resync sweep carry them along; Asterisk reads them through
/// the view `hexidian.route` (one primary-key lookup, `yes`/`no` text for the dialplan).
const V5: &str = r"
ALTER TABLE hexidian.sip_user
    ADD COLUMN forward_mode    text    NOT NULL DEFAULT ''
        CHECK (forward_mode IN ('', 'ENABLED', 'ON_BUSY', 'ON_UNAVAILABLE')),
    ADD COLUMN forward_target  text    NOT NULL DEFAULT '' CHECK (forward_target ~ '^[0-9]{0,32}$'),
    ADD COLUMN forward_delay_s integer NOT NULL DEFAULT 0 CHECK (forward_delay_s BETWEEN 0 AND 600),
    ADD COLUMN trunk           boolean NOT NULL DEFAULT false,
    ADD COLUMN call_waiting    boolean NOT NULL DEFAULT true,
    ADD COLUMN allow_dialout   boolean NOT NULL DEFAULT false,
    ADD COLUMN display         text    NOT NULL DEFAULT 'NUMBER_NAME'
        CHECK (display IN ('NUMBER', 'NUMBER_NAME', 'NAME'));
CREATE INDEX sip_user_forward_target_idx ON hexidian.sip_user (forward_target) WHERE forward_target <> '';

CREATE VIEW hexidian.route AS
SELECT id, kind, forward_mode, forward_target, forward_delay_s,
       CASE WHEN trunk THEN 'yes' ELSE 'no' END AS trunk,
       CASE WHEN call_waiting THEN 'yes' ELSE 'no' END AS call_waiting,
       CASE WHEN allow_dialout THEN 'yes' ELSE 'no' END AS allow_dialout,
       display
  FROM hexidian.sip_user;
";

/// `callgroup_targets` of V1 enumerated every path through nested groups, so its cost grew with
/// the product of the fan-outs: eight layers of seven groups, each holding every group of the
/// next layer (legal in GURU3), ran for minutes. This one keeps one row per reachable number
/// and relaxes it by hop layers (Bellman–Ford limited to 8 hops): layer k holds, for every
/// number reachable in at most k hops over active memberships, the smallest cumulative delay.
/// That is the same answer as before (delays are never negative, so a walk that comes back to
/// a number is never shorter than the path without the detour, and it has fewer hops), for
/// O(8 × (numbers + memberships reached)) work, and it stops as soon as a layer changes nothing.
const V6: &str = r"
CREATE OR REPLACE FUNCTION hexidian.callgroup_targets(root text)
RETURNS TABLE (target text, delay_s integer)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE layer (depth, nodes, delays, changed) AS (
        SELECT 0, ARRAY[root], ARRAY[0], true
        UNION ALL
        SELECT l.depth + 1, n.nodes, n.delays,
               (n.nodes, n.delays) IS DISTINCT FROM (l.nodes, l.delays)
          FROM layer l
          CROSS JOIN LATERAL (
              SELECT array_agg(b.node ORDER BY b.node) AS nodes,
                     array_agg(b.d ORDER BY b.node) AS delays
                FROM (
                    SELECT c.node, min(c.d) AS d
                      FROM (
                          SELECT x.node, x.d FROM unnest(l.nodes, l.delays) AS x (node, d)
                          UNION ALL
                          SELECT m.member, x.d + m.delay_s
                            FROM unnest(l.nodes, l.delays) AS x (node, d)
                            JOIN hexidian.callgroup_member m ON m.callgroup = x.node AND m.active
                      ) c
                     GROUP BY c.node
                ) b
          ) n
         WHERE l.depth < 8 AND l.changed
    ),
    last AS (SELECT nodes, delays FROM layer ORDER BY depth DESC LIMIT 1)
    SELECT t.node, t.d
      FROM last, unnest(last.nodes, last.delays) AS t (node, d)
      LEFT JOIN hexidian.callgroup g ON g.extension = t.node
     WHERE g.extension IS NULL OR NOT g.is_group
$$;
";

/// A resync re-sends every extension; marking each user's row as seen rewrote all of them
/// (10,000 row versions and their index entries per resync) although nothing changed. Each
/// batch now records the ids it re-sent as one row here, a user row is written only when its
/// data changed, and the sweep deletes the rows neither written nor recorded in the open
/// epoch. `SYNC_STARTED` clears the table: only the open (or last) epoch's rows matter.
const V7: &str = r"
CREATE TABLE hexidian.sync_seen (
    epoch bigint NOT NULL,
    ids   text[] NOT NULL
);
CREATE INDEX sync_seen_epoch_idx ON hexidian.sync_seen (epoch);
";
