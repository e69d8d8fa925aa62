//! Crash points: named places between the steps of a batch (and of a token bind) where a test
//! can make the process die at once, as `kill -9` would, to prove that a crash exactly there
//! loses nothing and acks nothing early.
//!
//! They exist only with the `failpoints` feature (the `fail` crate), which no release build
//! enables: without it [`point`] expands to nothing and [`arm`] arms nothing.
//! A test arms one point for a child process with `HEXIDIAN_CRASH_AT=NAME:N`: the `N`th time
//! the process reaches `NAME` it aborts (no destructors, no flushing, no goodbye to peers).

/// A batch is fetched from GURU3; nothing of it is planned or applied yet.
pub const BATCH_FETCHED: &str = "batch-fetched";
/// The PBX transaction of a segment has committed; the OMM has not been touched yet.
pub const PBX_COMMITTED: &str = "batch-pbx-committed";
/// One more OMM operation of a segment has returned (`:N` for the `N`th); the others may be
/// in flight.
pub const OMM_WRITTEN: &str = "batch-omm-written";
/// Every OMM operation of a segment has returned; nothing of it is journaled yet.
pub const OMM_APPLIED: &str = "batch-omm-applied";
/// Mirror and journal of a segment are committed; its messages are not acked yet.
pub const STATE_COMMITTED: &str = "batch-state-committed";
/// The acks of committed messages are about to be sent; GURU3 has not seen them.
pub const ACKS_SENDING: &str = "batch-acks-sending";
/// GURU3 confirmed the acks of a batch; the next batch is not fetched yet.
pub const ACKS_SENT: &str = "batch-acks-sent";
/// A resync's PBX sweep has committed; no OMM user is deleted yet.
pub const SWEEP_PBX: &str = "sweep-pbx";
/// A resync's sweep deleted one more OMM user (`:N` for the `N`th).
pub const SWEEP_OMM_DELETE: &str = "sweep-omm-delete";
/// A resync's mirror removals are committed; the resync is not closed yet.
pub const SWEEP_STATE: &str = "sweep-state";
/// The resync is closed in the PBX; the SYNC_ENDED is neither journaled nor acked yet.
pub const SWEEP_FINISHED: &str = "sweep-finished";
/// An unbound handset's temporary PBX user is written; its OMM user is not made yet.
pub const TEMP_PBX: &str = "temp-pbx";
/// An unbound handset has its temporary user in the PBX and the OMM.
pub const TEMP_GIVEN: &str = "temp-given";
/// A token call's bind is recorded durably and answered `OK`; nothing has moved yet.
pub const BIND_RECORDED: &str = "bind-recorded";
/// The OMM moved the handset of a bind; the temporary PBX user is not deleted yet.
pub const BIND_MOVED: &str = "bind-moved";
/// A bind is finished: its ASSIGN_HANDSET waits in the outbox.
pub const BIND_FINISHED: &str = "bind-finished";
/// GURU3 answered an ASSIGN_HANDSET; the answer is not recorded in the outbox yet.
pub const ASSIGN_SENT: &str = "assign-sent";

/// Every crash point, in the order a batch, a sweep and a bind reach them.
pub const ALL: [&str; 17] = [
    BATCH_FETCHED,
    PBX_COMMITTED,
    OMM_WRITTEN,
    OMM_APPLIED,
    STATE_COMMITTED,
    ACKS_SENDING,
    ACKS_SENT,
    SWEEP_PBX,
    SWEEP_OMM_DELETE,
    SWEEP_STATE,
    SWEEP_FINISHED,
    TEMP_PBX,
    TEMP_GIVEN,
    BIND_RECORDED,
    BIND_MOVED,
    BIND_FINISHED,
    ASSIGN_SENT,
];

/// Marks a crash point (see the module docs). An empty function without the `failpoints`
/// feature.
#[inline(always)]
pub fn point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// The environment variable through which the binary takes a spec for [`arm`].
pub const ENV: &str = "HEXIDIAN_CRASH_AT";

/// Arms the crash point a spec names (`NAME` or `NAME:N`, default `N` = 1): the process
/// aborts the `N`th time it reaches it. Returns what was armed; an unknown name or a bad count
/// is an error. Without the `failpoints` feature nothing is armed and `Ok(None)` returned.
pub fn arm(spec: &str) -> Result<Option<(&'static str, u64)>, String> {
    let (name, n) = parse(spec)?;
    if !arm_point(name, n) {
        return Ok(None);
    }
    Ok(Some((name, n)))
}

fn parse(spec: &str) -> Result<(&'static str, u64), String> {
    let (name, n) = match spec.split_once(':') {
        Some((name, n)) => (
            name,
            n.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{ENV}: {n:?} is not a positive count"))?,
        ),
        None => (spec, 1),
    };
    let name = ALL
        .into_iter()
        .find(|p| *p == name)
        .ok_or_else(|| format!("{ENV}: no crash point {name:?}; known: {}", ALL.join(", ")))?;
    Ok((name, n))
}

#[cfg(feature = "failpoints")]
fn arm_point(name: &'static str, n: u64) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    let hits = AtomicU64::new(0);
    let armed = fail::cfg_callback(name, move || {
        if hits.fetch_add(1, Ordering::SeqCst) + 1 == n {
            // what the test reads to know where the process died
            #[allow(clippy::print_stderr)]
            {
                eprintln!("crash point {name} reached {n} times: aborting");
            }
            std::process::abort();
        }
    });
    armed.is_ok()
}

#[cfg(not(feature = "failpoints"))]
fn arm_point(_: &'static str, _: u64) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_known_point_and_a_positive_count() {
        assert_eq!(parse("batch-acks-sent"), Ok((ACKS_SENT, 1)));
        assert_eq!(parse("bind-moved:7"), Ok((BIND_MOVED, 7)));
        assert!(parse("batch-acks-sent:0").unwrap_err().contains("positive"));
        assert!(
            parse("nowhere:2")
                .unwrap_err()
                .contains("known: batch-fetched")
        );
    }
}
