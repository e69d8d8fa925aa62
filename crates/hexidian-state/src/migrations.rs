//! The state tables' ledger, `hexidian.state_migrations`.
//!
//! These migrations were versions 2 to 4 of the PBX ledger (`hexidian.schema_migrations`)
//! before the state moved into this crate. A database that applied them there has the tables
//! already: the bootstrap copies those records (as versions 1 to 3) into the new ledger, so
//! nothing runs twice.

use asterisk_realtime::{Ledger, Migration};

pub(crate) const STATE: Ledger = Ledger {
    bootstrap: r"
DO $schema$
BEGIN
    -- CREATE SCHEMA IF NOT EXISTS checks CREATE on the database first: not when it exists
    IF to_regnamespace('hexidian') IS NULL THEN
        CREATE SCHEMA hexidian;
    END IF;
END
$schema$;
CREATE TABLE IF NOT EXISTS hexidian.state_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
DO $adopt$
BEGIN
    IF to_regclass('hexidian.schema_migrations') IS NOT NULL THEN
        INSERT INTO hexidian.state_migrations (version, description, applied_at)
        SELECT version - 1, description, applied_at FROM hexidian.schema_migrations
         WHERE version BETWEEN 2 AND 4
        ON CONFLICT (version) DO NOTHING;
    END IF;
END
$adopt$;
",
    exists: "SELECT to_regclass('hexidian.state_migrations') IS NOT NULL",
    applied: "SELECT version FROM hexidian.state_migrations ORDER BY version",
    record: "INSERT INTO hexidian.state_migrations (version, description) VALUES ($1, $2)",
    adopted: Some(ADOPTED),
    migrations: &[
        Migration {
            version: 1,
            description: "broker state: desired-state mirror and message journal",
            sql: V1,
        },
        Migration {
            version: 2,
            description: "unbound handsets: promised binds and the ASSIGN_HANDSET outbox",
            sql: V2,
        },
        Migration {
            version: 3,
            description: "journal pruning index",
            sql: V3,
        },
        Migration {
            version: 4,
            description: "one promised bind per handset; answered ASSIGN_HANDSETs lose their UAK",
            sql: V4,
        },
        Migration {
            version: 5,
            description: "resync epochs of unchanged mirror entries as one row per commit",
            sql: V5,
        },
        Migration {
            version: 6,
            description: "the number each journal row is about",
            sql: V6,
        },
        Migration {
            version: 7,
            description: "a dead letter's secrets, apart from its payload, for a replay",
            sql: V7,
        },
        Migration {
            version: 8,
            description: "active and standby: the fencing epoch, the lease, the epoch of each journal row",
            sql: V8,
        },
    ],
};

/// What the bootstrap would adopt, for a read-only look at a database whose state ledger does
/// not exist yet: whether the PBX ledger exists, and the versions it holds for these tables.
const ADOPTED: (&str, &str) = (
    "SELECT to_regclass('hexidian.schema_migrations') IS NOT NULL",
    "SELECT version - 1 FROM hexidian.schema_migrations WHERE version BETWEEN 2 AND 4",
);

/// The broker's own state. `desired.doc` is an opaque document per number written by the
/// broker (its mirror of GURU3's desired state); `journal` has one row per GURU3 message.
const V1: &str = r"
CREATE TABLE hexidian.desired (
    number     text PRIMARY KEY CHECK (number ~ '^[0-9]{1,32}$'),
    doc        text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hexidian.journal (
    id         bigint PRIMARY KEY,
    kind       text NOT NULL,
    status     text NOT NULL CHECK (status IN ('done', 'ignored', 'dead')),
    attempts   integer NOT NULL DEFAULT 1,
    reason     text,
    payload    text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_status_idx ON hexidian.journal (status, id);
";

/// Token-call binds promised to a caller (deleted when carried out) and the outbox of
/// `ASSIGN_HANDSET` messages for GURU3.
const V2: &str = r"
CREATE TABLE hexidian.handset_bind (
    id         bigserial PRIMARY KEY,
    ppn        integer NOT NULL,
    temp       text NOT NULL CHECK (temp ~ '^[0-9]{1,32}$'),
    extension  text NOT NULL CHECK (extension ~ '^[0-9]{1,32}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hexidian.assign_outbox (
    id         bigserial PRIMARY KEY,
    ipei       text NOT NULL,
    uak        text NOT NULL,
    extension  text NOT NULL CHECK (extension ~ '^[0-9]{1,32}$'),
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ok', 'nak')),
    text       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assign_outbox_pending_idx ON hexidian.assign_outbox (id) WHERE status = 'pending';
";

/// Old applied and ignored journal rows are pruned by age.
const V3: &str = r"
CREATE INDEX journal_prune_idx ON hexidian.journal (updated_at) WHERE status <> 'dead';
";

/// A handset has at most one promised bind: a re-dial after a commit that succeeded but was
/// reported as failed (the caller heard RETRY) finds the bind it made instead of adding a
/// second one (two moves, two ASSIGN_HANDSETs). Older duplicates keep their oldest row. An
/// ASSIGN_HANDSET GURU3 answered needs its UAK no more: the key is wiped, and the rows are
/// pruned with the journal.
const V4: &str = r"
DELETE FROM hexidian.handset_bind b
 USING hexidian.handset_bind o
 WHERE b.ppn = o.ppn AND b.id > o.id;
CREATE UNIQUE INDEX handset_bind_ppn_key ON hexidian.handset_bind (ppn);
UPDATE hexidian.assign_outbox SET uak = '' WHERE status <> 'pending';
CREATE INDEX assign_outbox_answered_idx ON hexidian.assign_outbox (updated_at) WHERE status <> 'pending';
";

/// A resync re-sends every extension, and each document carried its resync epochs: all of
/// them were rewritten (10,000 documents per resync) although only the epochs moved. A commit
/// now records such entries as one row per pair of epochs; a load gives each document the
/// greatest epochs recorded for its number. Only epochs of the open resync matter, so a
/// commit drops the rows older than the epochs it records.
const V5: &str = r"
CREATE TABLE hexidian.desired_seen (
    seen_epoch    bigint NOT NULL,
    members_epoch bigint NOT NULL,
    numbers       text[] NOT NULL
);
";

/// The number a message was about, also for one that did not decode: an operator lists dead
/// letters by number and sees which a later message for the same number made moot.
const V6: &str = r"
ALTER TABLE hexidian.journal ADD COLUMN number text;
";

/// A dead letter's payload is shown to operators, so the feed redacts passwords, tokens and
/// UAKs from it; a replay needs them back, and GURU3 has no way to ask for one extension. They
/// are kept in a column of their own that only a replay reads (the mirror in this database
/// holds the same secrets of every applied extension), and cleared when the row is no
/// longer a dead letter.
const V7: &str = r"
ALTER TABLE hexidian.journal ADD COLUMN secrets text;
";

/// Active and standby instances (see `leader.rs`): the epoch every write transaction checks
/// (moved on by each new active), the lease the active renews, and the epoch each journal row
/// was written under.
const V8: &str = r"
CREATE TABLE hexidian.leader (
    id     smallint PRIMARY KEY CHECK (id = 1),
    epoch  bigint NOT NULL,
    holder text NOT NULL,
    since  timestamptz
);
INSERT INTO hexidian.leader (id, epoch, holder) VALUES (1, 0, '');
CREATE TABLE hexidian.leader_lease (
    id         smallint PRIMARY KEY CHECK (id = 1),
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    renewed_at timestamptz
);
INSERT INTO hexidian.leader_lease (id, holder, epoch) VALUES (1, '', 0);
ALTER TABLE hexidian.journal ADD COLUMN epoch bigint;
";
