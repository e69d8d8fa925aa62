//! Every statement of the state tables: fixed texts, values only as bind parameters; bulk
//! writes go as parallel arrays through `unnest`.

// the mirror and the journal (ledger version 1)
pub(crate) const B_LOAD: &str = "SELECT d.number, d.doc, s.seen_epoch, s.members_epoch FROM hexidian.desired d \
     LEFT JOIN (SELECT x.number, max(v.seen_epoch) AS seen_epoch, max(v.members_epoch) AS members_epoch \
       FROM hexidian.desired_seen v, unnest(v.numbers) AS x (number) GROUP BY x.number) s ON s.number = d.number \
     ORDER BY d.number";
// one row per pair of epochs; rows older than the newest epoch recorded are of no use
pub(crate) const B_SEEN: &str = "INSERT INTO hexidian.desired_seen (seen_epoch, members_epoch, numbers) \
     SELECT x.s, x.m, array_agg(x.n ORDER BY x.n) FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS x (n, s, m) \
     GROUP BY x.s, x.m";
pub(crate) const B_SEEN_PRUNE: &str =
    "DELETE FROM hexidian.desired_seen WHERE greatest(seen_epoch, members_epoch) < $1";
pub(crate) const B_PUT: &str = "INSERT INTO hexidian.desired (number, doc) \
     SELECT * FROM unnest($1::text[], $2::text[]) \
     ON CONFLICT (number) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()";
pub(crate) const B_REMOVE: &str = "DELETE FROM hexidian.desired WHERE number = ANY($1::text[])";
pub(crate) const B_JOURNAL: &str = "INSERT INTO hexidian.journal (id, kind, status, attempts, reason, payload, number, secrets, epoch) \
     SELECT *, $9::bigint FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[], $7::text[], $8::text[]) \
     ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, status = EXCLUDED.status, \
       attempts = EXCLUDED.attempts, reason = EXCLUDED.reason, payload = EXCLUDED.payload, \
       number = EXCLUDED.number, secrets = EXCLUDED.secrets, epoch = EXCLUDED.epoch, updated_at = now()";
pub(crate) const B_COUNTS: &str = "SELECT count(*) FILTER (WHERE status = 'done'), \
     count(*) FILTER (WHERE status = 'ignored'), count(*) FILTER (WHERE status = 'dead') FROM hexidian.journal";
pub(crate) const B_PRUNE: &str = "DELETE FROM hexidian.journal WHERE id IN ( \
     SELECT id FROM hexidian.journal WHERE status <> 'dead' \
       AND updated_at < now() - make_interval(secs => $1::float8) LIMIT 10000)";
pub(crate) const B_DEAD: &str = "SELECT id, kind, status, attempts, reason, payload, number FROM hexidian.journal \
     WHERE status = 'dead' ORDER BY id DESC LIMIT $1";
// a dead letter with its secrets, and whether a later message for its number was applied
pub(crate) const B_DEAD_ONE: &str = "SELECT d.id, d.kind, d.status, d.attempts, d.reason, d.payload, d.number, d.secrets, \
       EXISTS (SELECT 1 FROM hexidian.journal l WHERE l.number = d.number AND l.status = 'done' AND l.id > d.id) \
     FROM hexidian.journal d WHERE d.status = 'dead' AND d.id = $1";
// every dead letter, oldest first, and whether a later message for its number was applied
// (one pass over the journal: no index on number, which every resync would have to fill)
pub(crate) const B_DEAD_LIST: &str = "WITH dead AS (SELECT id, kind, number, attempts, reason, first_seen, updated_at \
       FROM hexidian.journal WHERE status = 'dead'), \
     later AS (SELECT j.number, max(j.id) AS last_done FROM hexidian.journal j \
       WHERE j.status = 'done' AND j.number IN (SELECT number FROM dead) GROUP BY j.number) \
     SELECT d.id, d.kind, d.number, d.attempts, d.reason, \
       to_char(d.first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
       to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
       coalesce(l.last_done > d.id, false) \
     FROM dead d LEFT JOIN later l ON l.number = d.number ORDER BY d.id";

// promised binds and the ASSIGN_HANDSET outbox (ledger version 2)
// one bind per handset (ledger version 4): the latest call's target wins, the id stays
pub(crate) const H_BIND_ADD: &str = "INSERT INTO hexidian.handset_bind (ppn, temp, extension) VALUES ($1, $2, $3) \
     ON CONFLICT (ppn) DO UPDATE SET temp = EXCLUDED.temp, extension = EXCLUDED.extension RETURNING id";
pub(crate) const H_BINDS: &str =
    "SELECT id, ppn, temp, extension FROM hexidian.handset_bind ORDER BY id";
pub(crate) const H_BIND_DONE: &str = "DELETE FROM hexidian.handset_bind WHERE id = $1";
pub(crate) const H_OUTBOX_ADD: &str =
    "INSERT INTO hexidian.assign_outbox (ipei, uak, extension) VALUES ($1, $2, $3)";
pub(crate) const H_OUTBOX: &str = "SELECT id, ipei, uak, extension FROM hexidian.assign_outbox \
     WHERE status = 'pending' ORDER BY id LIMIT $1";
pub(crate) const H_OUTBOX_DEPTH: &str =
    "SELECT count(*) FROM hexidian.assign_outbox WHERE status = 'pending'";
// GURU3 answered: the UAK is not needed any more
pub(crate) const H_OUTBOX_DONE: &str = "UPDATE hexidian.assign_outbox SET status = $2, text = $3, uak = '', updated_at = now() \
     WHERE id = $1 AND status = 'pending'";
pub(crate) const H_OUTBOX_PRUNE: &str = "DELETE FROM hexidian.assign_outbox WHERE id IN ( \
     SELECT id FROM hexidian.assign_outbox WHERE status <> 'pending' \
       AND updated_at < now() - make_interval(secs => $1::float8) LIMIT 10000)";

/// Every statement with its name, for the snapshot of generated SQL.
#[cfg(test)]
pub(crate) const ALL: &[(&str, &str)] = &[
    ("b_load", B_LOAD),
    ("b_seen", B_SEEN),
    ("b_seen_prune", B_SEEN_PRUNE),
    ("b_put", B_PUT),
    ("b_remove", B_REMOVE),
    ("b_journal", B_JOURNAL),
    ("b_counts", B_COUNTS),
    ("b_dead", B_DEAD),
    ("b_dead_one", B_DEAD_ONE),
    ("b_dead_list", B_DEAD_LIST),
    ("b_prune", B_PRUNE),
    ("h_bind_add", H_BIND_ADD),
    ("h_outbox_prune", H_OUTBOX_PRUNE),
    ("h_binds", H_BINDS),
    ("h_bind_done", H_BIND_DONE),
    ("h_outbox_add", H_OUTBOX_ADD),
    ("h_outbox", H_OUTBOX),
    ("h_outbox_depth", H_OUTBOX_DEPTH),
    ("h_outbox_done", H_OUTBOX_DONE),
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
