//! hexidian's own schema (`hexidian.*`), created and upgraded by versioned migrations.

/// `(version, description, SQL)`, applied in order, each in its own transaction.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "ownership, sync state, call groups and routes", V1),
    (
        2,
        "broker state: desired-state mirror and message journal",
        V2,
    ),
    (
        3,
        "unbound handsets: promised binds and the ASSIGN_HANDSET outbox",
        V3,
    ),
    (4, "journal pruning index", V4),
    (
        5,
        "per-user routing: forwards, trunks, call waiting, dial-out, caller display",
        V5,
    ),
];

pub(crate) const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS hexidian; \
     CREATE TABLE IF NOT EXISTS hexidian.schema_migrations ( \
         version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

/// Serialises concurrent migrators (a constant advisory-lock key).
pub(crate) const LOCK: &str = "SELECT pg_advisory_xact_lock(7460271942)";
pub(crate) const APPLIED: &str = "SELECT version FROM hexidian.schema_migrations ORDER BY version";
pub(crate) const RECORD: &str =
    "INSERT INTO hexidian.schema_migrations (version, description) VALUES ($1, $2)";

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

/// The broker's own state. `desired.doc` is an opaque document per number written by the
/// broker (its mirror of GURU3's desired state); `journal` has one row per GURU3 message.
const V2: &str = r"
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
const V3: &str = r"
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
const V4: &str = r"
CREATE INDEX journal_prune_idx ON hexidian.journal (updated_at) WHERE status <> 'dead';
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
