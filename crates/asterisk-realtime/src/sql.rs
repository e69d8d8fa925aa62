//! Every SQL statement this crate runs. Values are always bind parameters; enum-typed columns
//! are bound through [`Label`], which only carries labels from this crate's fixed sets.

use postgres_types::{IsNull, Kind, ToSql, Type, to_sql_checked};

/// An enum label (`'yes'`, `'rfc4733'`, …) bound to an enum-typed parameter. Accepts any enum
/// type whose labels include it, so one statement serves `ast_bool_values` and `yesno_values`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Label(pub(crate) &'static str);

impl Label {
    pub(crate) fn yes_no(b: bool) -> Self {
        Self(if b { "yes" } else { "no" })
    }
}

impl ToSql for Label {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if let Kind::Enum(labels) = ty.kind() {
            if !labels.iter().any(|l| l == self.0) {
                return Err(format!("enum {} has no label {:?}", ty.name(), self.0).into());
            }
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Enum(_))
    }

    to_sql_checked!();
}

/// Resolves `ps_endpoints` the way the statements do (search_path), not via `current_schema()`:
/// with a role named `hexidian`, `"$user"` makes the `hexidian` schema current.
pub(crate) const DETECT_SCHEMA: &str = "SELECT t.typname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass('ps_endpoints') AND a.attname = 'direct_media' AND NOT a.attisdropped";
pub(crate) const HAS_CONTACTS: &str = "SELECT to_regclass('ps_contacts') IS NOT NULL";
pub(crate) const SET_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', $1, true)";
pub(crate) const LOCK_ID: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

pub(crate) const LOCK_IDS: &str = "SELECT pg_advisory_xact_lock(hashtext(x.id)) FROM unnest($1::text[]) WITH ORDINALITY AS x (id, n) ORDER BY x.n";
pub(crate) const U_FOREIGNS: &str = "SELECT x.id, CASE \
       WHEN EXISTS (SELECT 1 FROM ps_endpoints WHERE id = x.id) THEN 'ps_endpoints' \
       WHEN EXISTS (SELECT 1 FROM ps_aors WHERE id = x.id) THEN 'ps_aors' \
       WHEN EXISTS (SELECT 1 FROM ps_auths WHERE id = x.id) THEN 'ps_auths' END \
     FROM unnest($1::text[]) AS x (id)";
pub(crate) const U_OWNER: &str =
    "SELECT kind, display_name FROM hexidian.sip_user WHERE id = $1 FOR UPDATE";
pub(crate) const U_FOREIGN: &str = "SELECT CASE \
       WHEN EXISTS (SELECT 1 FROM ps_endpoints WHERE id = $1) THEN 'ps_endpoints' \
       WHEN EXISTS (SELECT 1 FROM ps_aors WHERE id = $1) THEN 'ps_aors' \
       WHEN EXISTS (SELECT 1 FROM ps_auths WHERE id = $1) THEN 'ps_auths' END";
pub(crate) const U_AOR: &str = "INSERT INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (id) DO UPDATE SET max_contacts = EXCLUDED.max_contacts, \
       remove_existing = EXCLUDED.remove_existing, qualify_frequency = EXCLUDED.qualify_frequency";
pub(crate) const U_AUTH_SET: &str = "INSERT INTO ps_auths (id, auth_type, username, password) \
     VALUES ($1, $3, $1, $2) \
     ON CONFLICT (id) DO UPDATE SET auth_type = EXCLUDED.auth_type, username = EXCLUDED.username, \
       password = EXCLUDED.password \
     RETURNING password";
pub(crate) const U_AUTH_KEEP: &str = "INSERT INTO ps_auths (id, auth_type, username, password) \
     VALUES ($1, $3, $1, $2) \
     ON CONFLICT (id) DO UPDATE SET auth_type = EXCLUDED.auth_type, username = EXCLUDED.username, \
       password = coalesce(nullif(ps_auths.password, ''), EXCLUDED.password) \
     RETURNING password";
pub(crate) const U_ENDPOINT: &str = "INSERT INTO ps_endpoints (id, aors, auth, context, disallow, allow, transport, \
       direct_media, rtp_symmetric, force_rport, rewrite_contact, dtmf_mode, callerid) \
     VALUES ($1, $1, $1, $2, 'all', $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (id) DO UPDATE SET aors = EXCLUDED.aors, auth = EXCLUDED.auth, context = EXCLUDED.context, \
       disallow = EXCLUDED.disallow, allow = EXCLUDED.allow, transport = EXCLUDED.transport, \
       direct_media = EXCLUDED.direct_media, rtp_symmetric = EXCLUDED.rtp_symmetric, \
       force_rport = EXCLUDED.force_rport, rewrite_contact = EXCLUDED.rewrite_contact, \
       dtmf_mode = EXCLUDED.dtmf_mode, callerid = EXCLUDED.callerid";
pub(crate) const U_MARK: &str = "INSERT INTO hexidian.sip_user (id, kind, display_name, seen_epoch, \
       forward_mode, forward_target, forward_delay_s, trunk, call_waiting, allow_dialout, display) \
     VALUES ($1, $2, $3, (SELECT current_epoch FROM hexidian.sync_state), $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, display_name = EXCLUDED.display_name, \
       seen_epoch = EXCLUDED.seen_epoch, forward_mode = EXCLUDED.forward_mode, \
       forward_target = EXCLUDED.forward_target, forward_delay_s = EXCLUDED.forward_delay_s, \
       trunk = EXCLUDED.trunk, call_waiting = EXCLUDED.call_waiting, \
       allow_dialout = EXCLUDED.allow_dialout, display = EXCLUDED.display, updated_at = now()";

// set-based user upserts: rows arrive as one JSON array; jsonb_populate_recordset gives every
// field the column's own type, so enum columns take labels on both schema generations
pub(crate) const UB_AOR: &str = "INSERT INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency) \
     SELECT r.id, r.max_contacts, r.remove_existing, r.qualify_frequency \
       FROM jsonb_populate_recordset(NULL::ps_aors, $1::text::jsonb) AS r \
     ON CONFLICT (id) DO UPDATE SET max_contacts = EXCLUDED.max_contacts, \
       remove_existing = EXCLUDED.remove_existing, qualify_frequency = EXCLUDED.qualify_frequency \
     WHERE (ps_aors.max_contacts, ps_aors.remove_existing, ps_aors.qualify_frequency) \
       IS DISTINCT FROM (EXCLUDED.max_contacts, EXCLUDED.remove_existing, EXCLUDED.qualify_frequency)";
pub(crate) const UB_AUTH_SET: &str = "INSERT INTO ps_auths (id, auth_type, username, password) \
     SELECT r.id, r.auth_type, r.id, r.password FROM jsonb_populate_recordset(NULL::ps_auths, $1::text::jsonb) AS r \
     ON CONFLICT (id) DO UPDATE SET auth_type = EXCLUDED.auth_type, username = EXCLUDED.username, \
       password = EXCLUDED.password \
     RETURNING id::text, password::text";
pub(crate) const UB_AUTH_KEEP: &str = "INSERT INTO ps_auths (id, auth_type, username, password) \
     SELECT r.id, r.auth_type, r.id, r.password FROM jsonb_populate_recordset(NULL::ps_auths, $1::text::jsonb) AS r \
     ON CONFLICT (id) DO UPDATE SET auth_type = EXCLUDED.auth_type, username = EXCLUDED.username, \
       password = coalesce(nullif(ps_auths.password, ''), EXCLUDED.password) \
     RETURNING id::text, password::text";
pub(crate) const UB_ENDPOINT: &str = "INSERT INTO ps_endpoints (id, aors, auth, context, disallow, allow, transport, \
       direct_media, rtp_symmetric, force_rport, rewrite_contact, dtmf_mode, callerid) \
     SELECT r.id, r.id, r.id, r.context, 'all', r.allow, r.transport, r.direct_media, r.rtp_symmetric, \
            r.force_rport, r.rewrite_contact, r.dtmf_mode, r.callerid \
       FROM jsonb_populate_recordset(NULL::ps_endpoints, $1::text::jsonb) AS r \
     ON CONFLICT (id) DO UPDATE SET aors = EXCLUDED.aors, auth = EXCLUDED.auth, context = EXCLUDED.context, \
       disallow = EXCLUDED.disallow, allow = EXCLUDED.allow, transport = EXCLUDED.transport, \
       direct_media = EXCLUDED.direct_media, rtp_symmetric = EXCLUDED.rtp_symmetric, \
       force_rport = EXCLUDED.force_rport, rewrite_contact = EXCLUDED.rewrite_contact, \
       dtmf_mode = EXCLUDED.dtmf_mode, callerid = EXCLUDED.callerid \
     WHERE (ps_endpoints.aors, ps_endpoints.auth, ps_endpoints.context, ps_endpoints.disallow, \
            ps_endpoints.allow, ps_endpoints.transport, ps_endpoints.direct_media, ps_endpoints.rtp_symmetric, \
            ps_endpoints.force_rport, ps_endpoints.rewrite_contact, ps_endpoints.dtmf_mode, ps_endpoints.callerid) \
       IS DISTINCT FROM (EXCLUDED.aors, EXCLUDED.auth, EXCLUDED.context, EXCLUDED.disallow, \
            EXCLUDED.allow, EXCLUDED.transport, EXCLUDED.direct_media, EXCLUDED.rtp_symmetric, \
            EXCLUDED.force_rport, EXCLUDED.rewrite_contact, EXCLUDED.dtmf_mode, EXCLUDED.callerid)";
pub(crate) const UB_MARK: &str = "INSERT INTO hexidian.sip_user (id, kind, display_name, seen_epoch, \
       forward_mode, forward_target, forward_delay_s, trunk, call_waiting, allow_dialout, display) \
     SELECT r.id, r.kind, r.display_name, (SELECT current_epoch FROM hexidian.sync_state), \
            r.forward_mode, r.forward_target, r.forward_delay_s, r.trunk, r.call_waiting, \
            r.allow_dialout, r.display \
       FROM jsonb_populate_recordset(NULL::hexidian.sip_user, $1::text::jsonb) AS r \
     ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, display_name = EXCLUDED.display_name, \
       seen_epoch = EXCLUDED.seen_epoch, forward_mode = EXCLUDED.forward_mode, \
       forward_target = EXCLUDED.forward_target, forward_delay_s = EXCLUDED.forward_delay_s, \
       trunk = EXCLUDED.trunk, call_waiting = EXCLUDED.call_waiting, \
       allow_dialout = EXCLUDED.allow_dialout, display = EXCLUDED.display, updated_at = now()";

// during a resync, the ids of a batch are recorded as seen in one row
pub(crate) const UB_SEEN: &str = "INSERT INTO hexidian.sync_seen (epoch, ids) \
     SELECT s.current_epoch, $1::text[] FROM hexidian.sync_state s WHERE s.in_progress";
// what the rows of a batch's ids hold now, every column as text, in the order the set-based
// path compares them: ownership row (9), endpoint (presence + 12), auth (presence + 3), AOR
// (presence + 3). One index lookup per id and table (LATERAL … LIMIT: a plain join of a few
// hundred ids makes the planner hash all 10,000 rows of each table); LIMIT 2 lets a second
// row of an id (a schema without unique ids) show up as a duplicate
pub(crate) const UB_ROWS: &str = "SELECT x.id, \
       u.kind, u.display_name, u.forward_mode, u.forward_target, u.forward_delay_s::text, u.trunk::text, \
       u.call_waiting::text, u.allow_dialout::text, u.display, \
       e.id IS NOT NULL, e.aors::text, e.auth::text, e.context::text, e.disallow::text, e.allow::text, \
       e.transport::text, e.direct_media::text, e.rtp_symmetric::text, e.force_rport::text, \
       e.rewrite_contact::text, e.dtmf_mode::text, e.callerid::text, \
       a.id IS NOT NULL, a.auth_type::text, a.username::text, a.password::text, \
       r.id IS NOT NULL, r.max_contacts::text, r.remove_existing::text, r.qualify_frequency::text \
     FROM unnest($1::text[]) AS x (id) \
     LEFT JOIN LATERAL (SELECT * FROM hexidian.sip_user u WHERE u.id = x.id LIMIT 2) u ON true \
     LEFT JOIN LATERAL (SELECT * FROM ps_endpoints e WHERE e.id = x.id LIMIT 2) e ON true \
     LEFT JOIN LATERAL (SELECT * FROM ps_auths a WHERE a.id = x.id LIMIT 2) a ON true \
     LEFT JOIN LATERAL (SELECT * FROM ps_aors r WHERE r.id = x.id LIMIT 2) r ON true";
pub(crate) const P_PASSWORD: &str = "UPDATE ps_auths AS a SET password = $2 FROM hexidian.sip_user AS u WHERE a.id = $1 AND u.id = a.id";
pub(crate) const P_CALLERID: &str = "UPDATE ps_endpoints AS e SET callerid = $2 FROM hexidian.sip_user AS u WHERE e.id = $1 AND u.id = e.id";
pub(crate) const P_DISPLAY: &str =
    "UPDATE hexidian.sip_user SET display_name = $2, updated_at = now() WHERE id = $1";

pub(crate) const D_ENDPOINT: &str = "DELETE FROM ps_endpoints WHERE id = $1";
pub(crate) const D_AUTH: &str = "DELETE FROM ps_auths WHERE id = $1";
pub(crate) const D_AOR: &str = "DELETE FROM ps_aors WHERE id = $1";
pub(crate) const D_MARK: &str = "DELETE FROM hexidian.sip_user WHERE id = $1";
/// Which of these endpoints have a live registration (a row in `ps_contacts`).
pub(crate) const Q_REGISTERED: &str =
    "SELECT DISTINCT endpoint FROM ps_contacts WHERE endpoint = ANY($1::text[])";
pub(crate) const D_CONTACTS: &str = "DELETE FROM ps_contacts WHERE endpoint = $1 OR id LIKE $2";
// the contacts of every swept user in one statement (ids are `<aor>^3B@<hash>`)
pub(crate) const S_CONTACTS: &str = "DELETE FROM ps_contacts \
     WHERE endpoint = ANY ($1::text[]) OR split_part(id, '^3B@', 1) = ANY ($1::text[])";

pub(crate) const R_TAKEN: &str = "SELECT EXISTS (SELECT 1 FROM hexidian.sip_user WHERE id = $1), \
       EXISTS (SELECT 1 FROM ps_endpoints WHERE id = $1) OR EXISTS (SELECT 1 FROM ps_aors WHERE id = $1) \
       OR EXISTS (SELECT 1 FROM ps_auths WHERE id = $1)";
pub(crate) const R_ENDPOINT: &str =
    "UPDATE ps_endpoints SET id = $2, aors = $2, auth = $2, callerid = $3 WHERE id = $1";
pub(crate) const R_AUTH: &str = "UPDATE ps_auths SET id = $2, username = $2 WHERE id = $1";
pub(crate) const R_AOR: &str = "UPDATE ps_aors SET id = $2 WHERE id = $1";
// a user re-sent in the open resync stays seen under its new number
pub(crate) const R_MARK: &str = "UPDATE hexidian.sip_user SET id = $2, updated_at = now(), \
       seen_epoch = greatest(seen_epoch, (SELECT s.current_epoch FROM hexidian.sync_state s \
         WHERE s.in_progress AND EXISTS (SELECT 1 FROM hexidian.sync_seen x \
           WHERE x.epoch = s.current_epoch AND $1 = ANY (x.ids)))) \
     WHERE id = $1";
pub(crate) const R_GROUP: &str =
    "UPDATE hexidian.callgroup SET extension = $2, updated_at = now() WHERE extension = $1";
pub(crate) const R_MEMBER: &str =
    "UPDATE hexidian.callgroup_member SET member = $2 WHERE member = $1";
// GURU3 keeps forwards by reference and does not re-send them on a rename (guru3.md §6.3)
pub(crate) const ROLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";
pub(crate) const GRANT_ROUTING: &str =
    "SELECT format('GRANT SELECT ON hexidian.route, hexidian.callgroup_route TO %I', $1::text)";
pub(crate) const R_FORWARD: &str = "UPDATE hexidian.sip_user SET forward_target = $2, updated_at = now() WHERE forward_target = $1";

pub(crate) const L_USER: &str = "SELECT u.id, u.kind, u.display_name, greatest(u.seen_epoch, s.epoch), \
       e.id IS NOT NULL, r.id IS NOT NULL, a.id IS NOT NULL, e.context::text, e.callerid::text, \
       coalesce(e.auth = u.id AND e.aors = u.id, false), a.password::text \
     FROM hexidian.sip_user u \
     LEFT JOIN ps_endpoints e ON e.id = u.id LEFT JOIN ps_aors r ON r.id = u.id LEFT JOIN ps_auths a ON a.id = u.id \
     LEFT JOIN (SELECT x.id, max(v.epoch) AS epoch FROM hexidian.sync_seen v, unnest(v.ids) AS x (id) \
       GROUP BY x.id) s ON s.id = u.id \
     WHERE $1::text IS NULL OR u.id = $1 ORDER BY u.id";
pub(crate) const L_FOREIGN: &str = "SELECT e.id::text, e.context::text FROM ps_endpoints e \
     WHERE e.context = ANY ($1::text[]) AND NOT EXISTS (SELECT 1 FROM hexidian.sip_user u WHERE u.id = e.id) ORDER BY e.id";

// the marks of earlier epochs are of no use any more
pub(crate) const S_BEGIN: &str = "WITH gone AS (DELETE FROM hexidian.sync_seen) \
     UPDATE hexidian.sync_state SET current_epoch = current_epoch + 1, in_progress = true, \
       updated_at = now() RETURNING current_epoch";
pub(crate) const S_STATE: &str =
    "SELECT current_epoch, in_progress FROM hexidian.sync_state FOR UPDATE";
// `seen`: the ids re-sent in epoch $1 without a change (their rows keep an older seen_epoch)
pub(crate) const S_GUARD: &str = "WITH seen AS (SELECT DISTINCT x.id FROM hexidian.sync_seen, unnest(ids) AS x (id) \
       WHERE epoch = $1) \
     SELECT count(*) FILTER (WHERE u.seen_epoch < $1 AND s.id IS NULL), count(*) \
       FROM hexidian.sip_user u LEFT JOIN seen s ON s.id = u.id WHERE u.kind <> 'temp'";
pub(crate) const S_SWEEP_USERS: &str = "WITH seen AS (SELECT DISTINCT x.id FROM hexidian.sync_seen, unnest(ids) AS x (id) \
       WHERE epoch = $1), \
       stale AS (DELETE FROM hexidian.sip_user u WHERE u.kind <> 'temp' AND u.seen_epoch < $1 \
         AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.id = u.id) RETURNING u.id), \
       gone_e AS (DELETE FROM ps_endpoints WHERE id IN (SELECT id FROM stale) RETURNING id), \
       gone_r AS (DELETE FROM ps_aors WHERE id IN (SELECT id FROM stale) RETURNING id), \
       gone_a AS (DELETE FROM ps_auths WHERE id IN (SELECT id FROM stale) RETURNING id) \
     SELECT id FROM stale ORDER BY id";
pub(crate) const S_CLEAR_LISTS: &str = "DELETE FROM hexidian.callgroup_member m USING hexidian.callgroup g \
     WHERE m.callgroup = g.extension AND g.members_epoch < $1";
pub(crate) const S_SWEEP_GROUPS: &str = "DELETE FROM hexidian.callgroup g \
     WHERE (g.is_group AND g.group_epoch < $1) \
        OR (NOT g.is_group AND NOT EXISTS (SELECT 1 FROM hexidian.callgroup_member m WHERE m.callgroup = g.extension)) \
     RETURNING g.extension";
pub(crate) const S_END: &str = "UPDATE hexidian.sync_state SET in_progress = false, updated_at = now() \
     WHERE current_epoch = $1 AND in_progress RETURNING current_epoch";

pub(crate) const C_GROUP: &str = "INSERT INTO hexidian.callgroup (extension, name, short_name, is_group, group_epoch) \
     VALUES ($1, $2, $3, true, (SELECT current_epoch FROM hexidian.sync_state)) \
     ON CONFLICT (extension) DO UPDATE SET name = EXCLUDED.name, short_name = EXCLUDED.short_name, is_group = true, \
       group_epoch = EXCLUDED.group_epoch, updated_at = now()";
// returns the groups whose route may change (new, or name, tag or kind changed): the CTE
// `changed` reads the rows as they were before the statement
pub(crate) const CB_GROUP: &str = "WITH x AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS x (e, n, s)), \
     changed AS (SELECT x.e FROM x LEFT JOIN hexidian.callgroup g ON g.extension = x.e \
       WHERE g.extension IS NULL OR NOT g.is_group OR g.name IS DISTINCT FROM x.n OR g.short_name IS DISTINCT FROM x.s), \
     up AS (INSERT INTO hexidian.callgroup (extension, name, short_name, is_group, group_epoch) \
       SELECT x.e, x.n, x.s, true, (SELECT current_epoch FROM hexidian.sync_state) FROM x \
       ON CONFLICT (extension) DO UPDATE SET name = EXCLUDED.name, short_name = EXCLUDED.short_name, is_group = true, \
         group_epoch = EXCLUDED.group_epoch, updated_at = now()) \
     SELECT e FROM changed";
pub(crate) const C_NOT_GROUP: &str = "UPDATE hexidian.callgroup SET is_group = false, name = $2, updated_at = now() \
     WHERE extension = $1 AND (is_group OR name IS DISTINCT FROM $2)";
pub(crate) const C_LIST_OWNER: &str = "INSERT INTO hexidian.callgroup (extension, name, members_epoch) \
     VALUES ($1, $2, (SELECT current_epoch FROM hexidian.sync_state)) \
     ON CONFLICT (extension) DO UPDATE SET name = EXCLUDED.name, members_epoch = EXCLUDED.members_epoch, updated_at = now()";
pub(crate) const C_PRUNE: &str =
    "DELETE FROM hexidian.callgroup_member WHERE callgroup = $1 AND member <> ALL ($2::text[])";
pub(crate) const C_MERGE: &str = "INSERT INTO hexidian.callgroup_member AS cm (callgroup, member, active, delay_s) \
     SELECT $1, t.member, t.active, t.delay_s \
       FROM unnest($2::text[], $3::boolean[], $4::integer[]) AS t (member, active, delay_s) \
     ON CONFLICT (callgroup, member) DO UPDATE SET active = EXCLUDED.active, delay_s = EXCLUDED.delay_s \
     WHERE (cm.active, cm.delay_s) IS DISTINCT FROM (EXCLUDED.active, EXCLUDED.delay_s)";
pub(crate) const C_DROP_IF_PLAIN: &str = "DELETE FROM hexidian.callgroup g WHERE g.extension = $1 AND NOT g.is_group \
       AND NOT EXISTS (SELECT 1 FROM hexidian.callgroup_member m WHERE m.callgroup = g.extension)";
// set-based member lists for a run of SetMembers: groups in $1 (names $2), pairs in the rest
pub(crate) const CB_LIST_OWNER: &str = "WITH x AS (SELECT * FROM unnest($1::text[], $2::text[]) AS x (e, n)), \
     changed AS (SELECT x.e FROM x LEFT JOIN hexidian.callgroup g ON g.extension = x.e \
       WHERE g.extension IS NULL OR g.name IS DISTINCT FROM x.n), \
     up AS (INSERT INTO hexidian.callgroup (extension, name, members_epoch) \
       SELECT x.e, x.n, (SELECT current_epoch FROM hexidian.sync_state) FROM x \
       ON CONFLICT (extension) DO UPDATE SET name = EXCLUDED.name, members_epoch = EXCLUDED.members_epoch, updated_at = now()) \
     SELECT e FROM changed";
pub(crate) const CB_PRUNE: &str = "DELETE FROM hexidian.callgroup_member m \
     WHERE m.callgroup = ANY ($1::text[]) \
       AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::text[]) AS k (g, member) \
                        WHERE k.g = m.callgroup AND k.member = m.member) \
     RETURNING m.callgroup";
pub(crate) const CB_MERGE: &str = "INSERT INTO hexidian.callgroup_member AS cm (callgroup, member, active, delay_s) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::integer[]) \
     ON CONFLICT (callgroup, member) DO UPDATE SET active = EXCLUDED.active, delay_s = EXCLUDED.delay_s \
     WHERE (cm.active, cm.delay_s) IS DISTINCT FROM (EXCLUDED.active, EXCLUDED.delay_s) \
     RETURNING cm.callgroup";
pub(crate) const CB_DROP_IF_PLAIN: &str = "DELETE FROM hexidian.callgroup g WHERE g.extension = ANY ($1::text[]) AND NOT g.is_group \
       AND NOT EXISTS (SELECT 1 FROM hexidian.callgroup_member m WHERE m.callgroup = g.extension) \
     RETURNING g.extension";
pub(crate) const C_DELETE: &str = "DELETE FROM hexidian.callgroup WHERE extension = $1";
pub(crate) const C_UNMEMBER: &str =
    "DELETE FROM hexidian.callgroup_member WHERE member = $1 RETURNING callgroup";
pub(crate) const C_ANCESTORS: &str = "WITH RECURSIVE up (node, depth) AS ( \
         SELECT n, 0 FROM unnest($1::text[]) AS n \
         UNION \
         SELECT m.callgroup, up.depth + 1 FROM hexidian.callgroup_member m JOIN up ON m.member = up.node WHERE up.depth < 8) \
     SELECT DISTINCT up.node FROM up JOIN hexidian.callgroup g ON g.extension = up.node";
pub(crate) const C_REFRESH: &str = "INSERT INTO hexidian.callgroup_route AS r (id, name, short_name, dialstring) \
     SELECT g.extension, g.name, g.short_name, \
            coalesce((SELECT string_agg('Local/' || t.delay_s || '-' || t.target || '@hexidian-cg-leg', '&' \
                                        ORDER BY t.delay_s, t.target) \
                        FROM hexidian.callgroup_targets(g.extension) AS t), '') \
       FROM hexidian.callgroup g \
      WHERE $1::text[] IS NULL OR g.extension = ANY ($1::text[]) \
     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, short_name = EXCLUDED.short_name, dialstring = EXCLUDED.dialstring \
      WHERE (r.name, r.short_name, r.dialstring) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.short_name, EXCLUDED.dialstring)";
pub(crate) const C_ROUTE: &str = "SELECT id, name, short_name, dialstring FROM hexidian.callgroup_route WHERE $1::text IS NULL OR id = $1 ORDER BY id";
pub(crate) const C_MEMBERS: &str = "SELECT g.extension, g.name, g.short_name, g.is_group, m.member, m.active, m.delay_s \
     FROM hexidian.callgroup g LEFT JOIN hexidian.callgroup_member m ON m.callgroup = g.extension \
     WHERE g.extension = $1 ORDER BY m.member";

// Privileges hexidian's role (current_user) and Asterisk's reader role ($1, may be NULL)
// lack for what hexidian does and Asterisk reads: (role, privilege, object, the GRANT that
// fixes it). Only objects that exist are checked (a missing table is a schema error); a
// missing hexidian schema needs CREATE on the database. Objects are looked up in the catalogs
// and checked by oid: resolving a name in a schema the role may not use would fail the query.
// CASE evaluates only its matching arm.
pub(crate) const MISSING_PRIVILEGES: &str = "WITH hx AS (SELECT oid FROM pg_namespace WHERE nspname = 'hexidian'), \
     rel (name, oid) AS ( \
       SELECT t, to_regclass(t)::oid FROM unnest(ARRAY['ps_endpoints', 'ps_auths', 'ps_aors', 'ps_contacts']) AS t \
       UNION ALL SELECT format('hexidian.%I', c.relname), c.oid FROM pg_class c JOIN hx ON c.relnamespace = hx.oid \
        WHERE c.relkind IN ('r', 'p', 'v') \
     ), \
     reader AS (SELECT $1::text AS who WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1::text)), \
     want (who, kind, obj, oid, priv) AS ( \
       SELECT current_user::text, 'table', r.name, r.oid, p \
         FROM rel r, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p \
        WHERE r.oid IS NOT NULL AND r.name IN ('ps_endpoints', 'ps_auths', 'ps_aors') \
       UNION ALL SELECT current_user::text, 'table', r.name, r.oid, p \
         FROM rel r, unnest(ARRAY['SELECT', 'DELETE']) AS p WHERE r.oid IS NOT NULL AND r.name = 'ps_contacts' \
       UNION ALL SELECT current_user::text, 'table', format('hexidian.%I', c.relname), c.oid, p \
         FROM pg_class c JOIN hx ON c.relnamespace = hx.oid, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p \
        WHERE c.relkind IN ('r', 'p') \
       UNION ALL SELECT current_user::text, 'schema', 'hexidian', hx.oid, p \
         FROM hx, unnest(ARRAY['USAGE', 'CREATE']) AS p \
       UNION ALL SELECT current_user::text, 'database', current_database()::text, d.oid, 'CREATE' \
         FROM pg_database d WHERE d.datname = current_database() AND NOT EXISTS (SELECT 1 FROM hx) \
       UNION ALL SELECT current_user::text, 'function', 'hexidian.callgroup_targets(text)', f.oid, 'EXECUTE' \
         FROM pg_proc f JOIN hx ON f.pronamespace = hx.oid WHERE f.proname = 'callgroup_targets' \
       UNION ALL SELECT reader.who, 'table', r.name, r.oid, 'SELECT' FROM reader, rel r \
        WHERE r.oid IS NOT NULL \
          AND r.name IN ('ps_endpoints', 'ps_auths', 'ps_aors', 'hexidian.route', 'hexidian.callgroup_route') \
       UNION ALL SELECT reader.who, 'schema', 'hexidian', hx.oid, 'USAGE' FROM reader, hx \
     ) \
     SELECT who, priv, obj, CASE kind \
              WHEN 'table' THEN format('GRANT %s ON %s TO %I', priv, obj, who) \
              WHEN 'schema' THEN format('GRANT %s ON SCHEMA %I TO %I', priv, obj, who) \
              WHEN 'database' THEN format('GRANT %s ON DATABASE %I TO %I', priv, obj, who) \
              ELSE format('GRANT %s ON FUNCTION %s TO %I', priv, obj, who) END \
       FROM want \
      WHERE NOT CASE kind \
              WHEN 'table' THEN has_table_privilege(who, oid, priv) \
              WHEN 'schema' THEN has_schema_privilege(who, oid, priv) \
              WHEN 'database' THEN has_database_privilege(who, oid, priv) \
              ELSE has_function_privilege(who, oid, priv) END \
      ORDER BY who, obj, priv";

// the resync state (current epoch, whether a resync is open)
pub(crate) const B_SYNC: &str = "SELECT current_epoch, in_progress FROM hexidian.sync_state";

/// Every statement with its name, for the snapshot of generated SQL.
#[cfg(test)]
pub(crate) const ALL: &[(&str, &str)] = &[
    ("detect_schema", DETECT_SCHEMA),
    ("has_contacts", HAS_CONTACTS),
    ("set_lock_timeout", SET_LOCK_TIMEOUT),
    ("lock_id", LOCK_ID),
    ("lock_ids", LOCK_IDS),
    ("u_foreigns", U_FOREIGNS),
    ("u_owner", U_OWNER),
    ("u_foreign", U_FOREIGN),
    ("u_aor", U_AOR),
    ("u_auth_set", U_AUTH_SET),
    ("u_auth_keep", U_AUTH_KEEP),
    ("u_endpoint", U_ENDPOINT),
    ("u_mark", U_MARK),
    ("ub_aor", UB_AOR),
    ("ub_auth_set", UB_AUTH_SET),
    ("ub_auth_keep", UB_AUTH_KEEP),
    ("ub_endpoint", UB_ENDPOINT),
    ("ub_mark", UB_MARK),
    ("ub_seen", UB_SEEN),
    ("ub_rows", UB_ROWS),
    ("p_password", P_PASSWORD),
    ("p_callerid", P_CALLERID),
    ("p_display", P_DISPLAY),
    ("d_endpoint", D_ENDPOINT),
    ("d_auth", D_AUTH),
    ("d_aor", D_AOR),
    ("d_mark", D_MARK),
    ("d_contacts", D_CONTACTS),
    ("s_contacts", S_CONTACTS),
    ("r_taken", R_TAKEN),
    ("r_endpoint", R_ENDPOINT),
    ("r_auth", R_AUTH),
    ("r_aor", R_AOR),
    ("r_mark", R_MARK),
    ("r_group", R_GROUP),
    ("r_member", R_MEMBER),
    ("r_forward", R_FORWARD),
    ("l_user", L_USER),
    ("l_foreign", L_FOREIGN),
    ("s_begin", S_BEGIN),
    ("s_state", S_STATE),
    ("s_guard", S_GUARD),
    ("s_sweep_users", S_SWEEP_USERS),
    ("s_clear_lists", S_CLEAR_LISTS),
    ("s_sweep_groups", S_SWEEP_GROUPS),
    ("s_end", S_END),
    ("b_sync", B_SYNC),
    ("c_group", C_GROUP),
    ("c_not_group", C_NOT_GROUP),
    ("c_list_owner", C_LIST_OWNER),
    ("c_prune", C_PRUNE),
    ("c_merge", C_MERGE),
    ("c_drop_if_plain", C_DROP_IF_PLAIN),
    ("cb_group", CB_GROUP),
    ("cb_list_owner", CB_LIST_OWNER),
    ("cb_prune", CB_PRUNE),
    ("cb_merge", CB_MERGE),
    ("cb_drop_if_plain", CB_DROP_IF_PLAIN),
    ("c_delete", C_DELETE),
    ("c_unmember", C_UNMEMBER),
    ("c_ancestors", C_ANCESTORS),
    ("c_refresh", C_REFRESH),
    ("c_route", C_ROUTE),
    ("c_members", C_MEMBERS),
    ("missing_privileges", MISSING_PRIVILEGES),
];

#[cfg(test)]
mod tests {
    #[test]
    fn generated_sql() {
        let text: Vec<String> = super::ALL
            .iter()
            .map(|(name, sql)| format!("-- {name}\n{sql};\n"))
            .collect();
        insta::assert_snapshot!("statements", text.join("\n"));
    }
}
