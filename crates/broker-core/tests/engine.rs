//! The delivery loop against the in-memory models of every port.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::future::Future;
use std::sync::Arc;

use broker_core::fakes::{MemoryDect, MemoryFeed, MemorySip, MemoryState, SkipClock};
use broker_core::model::{
    Command, Extension, Forward, Handset, Incoming, Kind, Member, Number, Secret,
};
use broker_core::ports::{EventFeed, JournalStatus, SipUserKind};
use broker_core::{Broker, BrokerConfig, BrokerPorts};

struct World {
    feed: MemoryFeed,
    dect: MemoryDect,
    sip: MemorySip,
    state: MemoryState,
    clock: SkipClock,
}

impl World {
    fn new() -> Self {
        Self {
            feed: MemoryFeed::default(),
            dect: MemoryDect::default(),
            sip: MemorySip::default(),
            state: MemoryState::default(),
            clock: SkipClock::default(),
        }
    }

    fn ports(&self) -> BrokerPorts {
        // a broker (re)starting fetches everything GURU3 still holds
        self.feed.wake();
        BrokerPorts {
            feed: Arc::new(self.feed.clone()),
            dect: Arc::new(self.dect.clone()),
            sip: Arc::new(self.sip.clone()),
            state: Arc::new(self.state.clone()),
            clock: Arc::new(self.clock.clone()),
        }
    }

    async fn broker(&self) -> Broker {
        Broker::start(self.ports(), BrokerConfig::default())
            .await
            .unwrap()
    }

    /// Fetch → process → ack until the queue is empty (retries included).
    async fn drain(&self, broker: &mut Broker) {
        for _ in 0..100 {
            if self.feed.unacked().is_empty() {
                return;
            }
            let mut report = if broker.pending_retry() > 0 {
                broker.retry().await
            } else {
                let batch = self.feed.next_batch().await.unwrap();
                broker.process(batch).await
            };
            self.feed
                .ack(std::mem::take(&mut report.acked))
                .await
                .unwrap();
        }
        panic!("queue did not drain: {:?}", self.feed.unacked());
    }
}

fn n(s: &str) -> Number {
    s.parse().unwrap()
}

fn msg(id: i64, cmd: Command) -> Incoming {
    Incoming {
        id,
        kind: format!("{cmd:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap()
            .to_owned(),
        raw: format!("{{\"id\": {id}}}"),
        secrets: None,
        command: Ok(cmd),
    }
}

fn sip(num: &str, pw: &str) -> Command {
    Command::Upsert(Extension {
        number: n(num),
        name: format!("SIP {num}"),
        kind: Kind::Sip {
            password: Secret::new(pw),
            premium: false,
        },
        forward: None,
        routing: Default::default(),
    })
}

fn dect(num: &str, ipei: Option<&str>) -> Command {
    Command::Upsert(Extension {
        number: n(num),
        name: "Tomás R. 📞".into(),
        kind: Kind::Dect {
            token: Secret::new("05704191"),
            encryption: true,
            handset: ipei.map(|i| Handset {
                ipei: i.into(),
                uak: Secret::new("FA05689957F199E95B1FE44621BFD6EE"),
            }),
        },
        forward: None,
        routing: Default::default(),
    })
}

fn group(num: &str) -> Command {
    Command::Upsert(Extension {
        number: n(num),
        name: "Infodesk".into(),
        kind: Kind::Group {
            short_name: "INF".into(),
        },
        forward: None,
        routing: Default::default(),
    })
}

fn members(num: &str, list: &[(&str, u32)]) -> Command {
    Command::SetMembers {
        number: n(num),
        name: "g".into(),
        members: list
            .iter()
            .map(|(m, d)| Member {
                number: n(m),
                active: true,
                delay_s: *d,
            })
            .collect(),
    }
}

#[tokio::test]
async fn every_message_type_converges_to_guru3s_state() {
    let w = World::new();
    let mut b = w.broker().await;
    let script = vec![
        Command::SyncStarted,
        sip("2001", "e1vdxzqL"),
        dect("2345", None),
        dect("2002", Some("03587 0412396 2")),
        group("1100"),
        Command::Upsert(Extension {
            number: n("1020"),
            name: "Wetter".into(),
            kind: Kind::Other {
                wire_type: "ANNOUNCEMENT".into(),
            },
            forward: None,
            routing: Default::default(),
        }),
        Command::Upsert(Extension {
            number: n("2001"),
            name: "SIP 2001".into(),
            kind: Kind::Sip {
                password: Secret::new("e1vdxzqL"),
                premium: false,
            },
            forward: Some(Forward {
                target: n("2345"),
                mode: "ON_BUSY".into(),
                delay_s: 0,
            }),
            routing: Default::default(),
        }),
        members("1100", &[("2001", 0), ("2002", 0), ("2345", 15)]),
        members("2345", &[("2002", 5)]),
        Command::SyncEnded,
        Command::Rename {
            old: n("2002"),
            new: n("2020"),
        },
        dect("2020", Some("03587 0412396 2")),
        Command::Unsubscribe(n("2020")),
        sip("2001", "e1vdxzqL"),
        Command::Delete(n("2345")),
        Command::CallExtension(n("2001")),
    ];
    for (i, c) in script.into_iter().enumerate() {
        w.feed.push(msg(52001 + i as i64, c));
    }
    w.feed.push(msg(
        52099,
        Command::Unknown {
            kind: "TELEPORT".into(),
        },
    ));
    let mut malformed = msg(52100, Command::SyncEnded);
    malformed.kind = "UPDATE_EXTENSION".into();
    malformed.command = Err("field `number`: not an extension number".into());
    w.feed.push(malformed);
    w.drain(&mut b).await;

    assert_eq!(w.sip.numbers(), ["2001", "2020"]);
    assert_eq!(w.sip.user("2001").unwrap().password.expose(), "e1vdxzqL");
    let d = w.sip.user("2020").unwrap();
    assert_eq!(d.kind, SipUserKind::Dect);
    // the DECT user's SIP password is ours, and the OMM got the same one
    let omm = w.dect.user("2020").unwrap();
    assert_eq!(omm.user.sip_password, d.password);
    assert_eq!(omm.user.name, "Tom?s R. ?");
    assert_eq!(omm.handset, None, "unsubscribed");
    assert!(
        w.dect.devices().contains(&"03587 0412396 2".to_owned()),
        "the handset stays subscribed"
    );
    assert_eq!(w.dect.numbers(), ["2020"], "2345 deleted, 2002 renamed");
    assert_eq!(w.sip.groups(), ["1100"]);
    let m: Vec<String> = w
        .sip
        .members("1100")
        .iter()
        .map(|m| m.number.to_string())
        .collect();
    assert_eq!(
        m,
        ["2001", "2020"],
        "renamed member rewritten, deleted member dropped"
    );
    assert!(
        w.state.with_status(JournalStatus::Ignored).contains(&52016),
        "CALL_EXTENSION recorded"
    );
    let ignored = w.state.journal(52099).unwrap();
    assert_eq!(ignored.status, JournalStatus::Ignored);
    assert!(ignored.reason.unwrap().contains("TELEPORT"));
    let dead = w.state.journal(52100).unwrap();
    assert_eq!(dead.status, JournalStatus::Dead);
    assert!(dead.reason.unwrap().contains("`number`"));
    assert_eq!(dead.payload, "{\"id\": 52100}", "the full payload is kept");
    assert!(w.feed.unacked().is_empty());
    // the mirror remembers the forward now pointing at the renamed number? 2001's target was
    // 2345, deleted: GURU3 re-sends 2001 without it (as the script does)
    assert!(
        b.mirror(&n("2001"))
            .unwrap()
            .extension
            .as_ref()
            .unwrap()
            .forward
            .is_none()
    );
}

#[tokio::test]
async fn transient_failures_keep_order_and_nothing_is_acked_early() {
    let w = World::new();
    let mut b = w.broker().await;
    w.feed.push(msg(1, sip("2001", "a")));
    w.feed.push(msg(2, Command::Delete(n("2001"))));
    w.sip.fail_next(2);
    let batch = w.feed.next_batch().await.unwrap();
    let r = b.process(batch).await;
    assert!(r.acked.is_empty(), "{r:?}");
    assert_eq!(r.retry, 2);
    // the broker retries its tail itself; the second attempt fails too, the third works
    let r = b.retry().await;
    assert!(r.acked.is_empty());
    let r = b.retry().await;
    assert_eq!(r.acked, [1, 2]);
    assert!(
        w.sip.numbers().is_empty(),
        "the delete came after the upsert"
    );
}

fn named_dect(num: &str, name: &str) -> Command {
    let Command::Upsert(mut e) = dect(num, None) else {
        unreachable!()
    };
    e.name = name.into();
    Command::Upsert(e)
}

/// Limits far below any outage in these tests, so that spending them on one would show.
fn tight() -> BrokerConfig {
    BrokerConfig::default()
        .max_attempts(2) // override: far below the outage
        .retry_budget(std::time::Duration::from_secs(1)) // override: far below the outage
}

/// Keeps retrying the tail for `minutes` of virtual time, one probe per second; nothing may
/// be acked meanwhile.
async fn wait_out(w: &World, b: &mut Broker, minutes: u64) {
    for _ in 0..minutes * 60 {
        w.clock.advance(std::time::Duration::from_secs(1));
        let r = b.retry().await;
        assert!(r.acked.is_empty(), "acked during the outage: {r:?}");
        assert!(b.status().lock().unwrap().stalled.is_some());
    }
}

#[tokio::test]
async fn an_omm_outage_longer_than_every_retry_limit_loses_nothing() {
    let w = World::new();
    let mut b = Broker::start(w.ports(), tight()).await.unwrap();
    w.feed.push(msg(1, named_dect("2002", "Before")));
    w.drain(&mut b).await;
    w.dect.set_down(true);
    w.feed.push(msg(2, named_dect("2002", "During")));
    w.feed.push(msg(3, group("1100")));
    w.feed.push(msg(4, named_dect("2002", "Last")));
    let batch = w.feed.next_batch().await.unwrap();
    assert!(b.process(batch).await.acked.is_empty());
    wait_out(&w, &mut b, 5).await;
    assert!(w.state.with_status(JournalStatus::Dead).is_empty());
    let stall = b.status().lock().unwrap().stalled.clone().unwrap();
    assert!(stall.reason.contains("peer is down"), "{stall:?}");
    assert_eq!(stall.message, 2);
    w.dect.set_down(false);
    let r = b.retry().await;
    assert_eq!(
        r.acked,
        [2, 3, 4],
        "applied in GURU3 order once the OMM is back"
    );
    assert_eq!(w.dect.user("2002").unwrap().user.name, "Last");
    for id in [2, 3, 4] {
        let j = w.state.journal(id).unwrap();
        assert_eq!((j.status, j.attempts), (JournalStatus::Done, 1), "{id}");
    }
    let s = b.status().lock().unwrap().clone();
    assert!(s.stalled.is_none());
    assert_eq!((s.done, s.dead), (4, 0));
}

#[tokio::test]
async fn a_pbx_outage_loses_nothing_and_runs_no_omm_operation() {
    let w = World::new();
    let mut b = Broker::start(w.ports(), tight()).await.unwrap();
    w.sip.set_down(true);
    w.feed.push(msg(1, named_dect("2002", "A")));
    w.feed.push(msg(2, sip("2001", "pw")));
    let batch = w.feed.next_batch().await.unwrap();
    assert!(b.process(batch).await.acked.is_empty());
    wait_out(&w, &mut b, 2).await;
    assert_eq!(w.dect.calls(), 0);
    w.sip.set_down(false);
    assert_eq!(b.retry().await.acked, [1, 2]);
    assert_eq!(w.dect.user("2002").unwrap().user.name, "A");
}

#[tokio::test]
async fn a_sync_ended_waits_for_the_omm_instead_of_dying() {
    let w = World::new();
    let mut b = Broker::start(w.ports(), tight()).await.unwrap();
    w.feed.push(msg(1, dect("2002", None)));
    w.feed.push(msg(2, dect("2003", None)));
    w.drain(&mut b).await;
    w.feed.push(msg(3, Command::SyncStarted));
    w.feed.push(msg(4, dect("2002", None)));
    w.drain(&mut b).await;
    w.dect.set_down(true);
    w.feed.push(msg(5, Command::SyncEnded));
    let batch = w.feed.next_batch().await.unwrap();
    assert!(b.process(batch).await.acked.is_empty());
    wait_out(&w, &mut b, 2).await;
    w.dect.set_down(false);
    assert_eq!(b.retry().await.acked, [5]);
    assert_eq!(
        w.dect.numbers(),
        ["2002"],
        "the sweep ran once the OMM was back"
    );
}

#[tokio::test]
async fn a_refused_message_is_still_dead_lettered_after_max_attempts() {
    let w = World::new();
    let config = BrokerConfig::default().max_attempts(3); // override: a short test of the bound
    let mut b = Broker::start(w.ports(), config).await.unwrap();
    w.feed.push(msg(1, dect("2002", None)));
    // a group needs no OMM: it goes through once the DECT message is given up
    w.feed.push(msg(2, group("1100")));
    w.dect.refuse_next(1000);
    let batch = w.feed.next_batch().await.unwrap();
    let mut acked = b.process(batch).await.acked;
    for _ in 0..5 {
        acked.extend(b.retry().await.acked);
    }
    assert_eq!(acked, [1, 2]);
    let j = w.state.journal(1).unwrap();
    assert_eq!((j.status, j.attempts), (JournalStatus::Dead, 3));
    assert!(j.reason.unwrap().contains("busy"));
    assert!(!j.payload.is_empty(), "a dead letter keeps its payload");
    assert_eq!(w.sip.groups(), ["1100"]);
    let done = w.state.journal(2).unwrap();
    assert_eq!(done.status, JournalStatus::Done);
    assert!(done.payload.is_empty(), "only dead letters keep a payload");
    assert_eq!(b.status().lock().unwrap().dead, 1);
}

#[tokio::test]
async fn a_later_message_for_a_number_waits_for_an_earlier_one_at_the_pbx() {
    let w = World::new();
    let mut b = w.broker().await;
    w.feed.push(msg(1, dect("2002", Some("03587 0412396 2"))));
    w.drain(&mut b).await;
    let calls = w.dect.calls();
    // the PBX cannot write 2002 for now; the unsubscribe after it needs only the OMM
    w.sip.lock_number("2002", 1);
    w.feed.push(msg(2, named_dect("2002", "Renamed")));
    w.feed.push(msg(3, Command::Unsubscribe(n("2002"))));
    let batch = w.feed.next_batch().await.unwrap();
    assert!(b.process(batch).await.acked.is_empty());
    assert_eq!(
        w.dect.calls(),
        calls,
        "the unsubscribe must not overtake the waiting update"
    );
    assert_eq!(
        w.dect.user("2002").unwrap().handset.as_deref(),
        Some("03587 0412396 2")
    );
    assert_eq!(b.retry().await.acked, [2, 3]);
    let u = w.dect.user("2002").unwrap();
    assert_eq!((u.user.name.as_str(), u.handset), ("Renamed", None));
}

#[tokio::test]
async fn a_dead_dect_create_leaves_no_bindable_token() {
    let w = World::new();
    w.dect.seed_foreign("2002", "Someone else's");
    let mut b = w.broker().await;
    let directory = b.directory();
    w.feed.push(msg(1, dect("2002", None)));
    w.drain(&mut b).await;
    assert_eq!(w.state.journal(1).unwrap().status, JournalStatus::Dead);
    assert!(directory.read().unwrap().by_token("05704191").is_none());
}

#[tokio::test]
async fn a_failed_state_commit_restores_mirror_and_counters() {
    let w = World::new();
    let mut b = w.broker().await;
    w.state.set_down(true);
    w.feed.push(msg(1, dect("2002", None)));
    w.feed.push(msg(2, sip("2001", "pw")));
    let batch = w.feed.next_batch().await.unwrap();
    for _ in 0..3 {
        let r = if b.pending_retry() == 0 {
            b.process(batch.clone()).await
        } else {
            b.retry().await
        };
        assert!(r.acked.is_empty());
        assert!(
            b.mirror(&n("2002")).is_none(),
            "an unsaved mirror entry stayed"
        );
        assert!(b.status().lock().unwrap().stalled.is_some());
    }
    let s = b.status().lock().unwrap().clone();
    assert_eq!((s.done, s.dead), (0, 0));
    w.state.set_down(false);
    assert_eq!(b.retry().await.acked, [1, 2]);
    let s = b.status().lock().unwrap().clone();
    assert_eq!((s.done, s.dead), (2, 0), "counted once");
    assert!(s.stalled.is_none());
    assert_eq!(w.state.journal(1).unwrap().attempts, 1);
}

#[tokio::test]
async fn a_rename_and_an_update_in_one_page_leave_one_omm_user() {
    let w = World::new();
    let mut b = w.broker().await;
    w.feed.push(msg(1, dect("3002", Some("03587 0412396 2"))));
    w.drain(&mut b).await;
    // what GURU3 emits for one save that changes number and name
    w.feed.push(msg(
        2,
        Command::Rename {
            old: n("3002"),
            new: n("3202"),
        },
    ));
    w.feed.push(msg(3, named_dect("3202", "New name")));
    w.drain(&mut b).await;
    assert_eq!(w.dect.numbers(), ["3202"]);
    let u = w.dect.user("3202").unwrap();
    assert_eq!(u.user.name, "New name");
    assert_eq!(u.handset.as_deref(), Some("03587 0412396 2"));
    assert!(w.state.with_status(JournalStatus::Dead).is_empty());
}

#[tokio::test]
async fn replaying_everything_is_harmless() {
    let w = World::new();
    let mut b = w.broker().await;
    let script = [
        dect("2002", Some("03587 0412396 2")),
        group("1100"),
        members("1100", &[("2002", 0)]),
        Command::Rename {
            old: n("2002"),
            new: n("2020"),
        },
        dect("2020", Some("03587 0412396 2")),
    ];
    let batch: Vec<Incoming> = script
        .iter()
        .enumerate()
        .map(|(i, c)| msg(i as i64 + 1, c.clone()))
        .collect();
    b.process(batch.clone()).await;
    let (sip1, omm1) = (w.sip.numbers(), w.dect.numbers());
    // a crash before the acks: a fresh broker sees the same messages again
    let mut b2 = w.broker().await;
    let r = b2.process(batch).await;
    assert_eq!(r.acked.len(), 5);
    assert_eq!((w.sip.numbers(), w.dect.numbers()), (sip1, omm1));
    // the OMM user has the password of the PBX user (a replayed rename may renew it)
    assert_eq!(
        w.sip.user("2020").unwrap().password,
        w.dect.user("2020").unwrap().user.sip_password
    );
    assert_eq!(
        w.dect.user("2020").unwrap().handset.as_deref(),
        Some("03587 0412396 2")
    );
}

#[tokio::test]
async fn resync_sweeps_owned_objects_only_and_survives_a_restart() {
    let w = World::new();
    w.dect.seed_foreign("3000", "Someone else's");
    let mut b = w.broker().await;
    for (i, c) in [
        sip("2001", "a"),
        dect("2002", None),
        dect("2003", None),
        sip("2004", "b"),
    ]
    .into_iter()
    .enumerate()
    {
        w.feed.push(msg(i as i64 + 1, c));
    }
    w.drain(&mut b).await;
    // a resync that no longer mentions 2003 and 2004, split over a restart
    w.feed.push(msg(10, Command::SyncStarted));
    w.feed.push(msg(11, sip("2001", "a")));
    w.drain(&mut b).await;
    let mut b = w.broker().await;
    assert_eq!(b.status().lock().unwrap().sync_epoch, Some(1));
    w.feed.push(msg(12, dect("2002", None)));
    w.feed.push(msg(13, Command::SyncEnded));
    w.drain(&mut b).await;
    assert_eq!(w.sip.numbers(), ["2001", "2002"]);
    assert_eq!(
        w.dect.numbers(),
        ["2002", "3000"],
        "the foreign OMM user is never swept"
    );
    assert!(b.mirror(&n("2003")).is_none());
}

/// The delivery loop until every message is acked, then its shutdown.
async fn run_until_acked(w: &World, b: Broker) {
    let (tx, rx) = futures_util::future::abortable(futures_util::future::pending::<()>());
    let run = tokio::spawn(b.run(async move {
        let _ = tx.await;
    }));
    while !w.feed.unacked().is_empty() {
        tokio::task::yield_now().await;
    }
    rx.abort();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn run_stops_on_shutdown_after_acking() {
    let w = World::new();
    let b = w.broker().await;
    w.feed.push(msg(1, sip("2001", "a")));
    run_until_acked(&w, b).await;
    assert_eq!(w.feed.acks(), [1]);
}

#[tokio::test]
async fn a_failed_state_commit_replays_the_whole_run_in_order() {
    let w = World::new();
    let mut b = w.broker().await;
    w.feed.push(msg(1, group("1100")));
    w.feed.push(msg(2, dect("2002", None)));
    w.feed.push(msg(3, Command::Delete(n("1100"))));
    // the OMM fails message 2 once, and the journal/mirror commit fails once
    w.dect.fail_next(1);
    w.state.fail_next(1);
    let batch = w.feed.next_batch().await.unwrap();
    let r = b.process(batch).await;
    assert!(r.acked.is_empty(), "{r:?}");
    assert_eq!(
        r.retry, 3,
        "the applied prefix is retried too, ahead of the rest"
    );
    let r = b.retry().await;
    w.feed.ack(r.acked).await.unwrap();
    w.drain(&mut b).await;
    assert!(
        w.sip.groups().is_empty(),
        "the deleted group must not come back"
    );
    assert!(w.sip.user("2002").is_some());
}

#[tokio::test]
async fn the_sweep_guard_counts_owned_omm_users_not_the_whole_mirror() {
    let w = World::new();
    let mut b = w.broker().await;
    let mut id = 0;
    let mut push = |c: Command| {
        id += 1;
        w.feed.push(msg(id, c));
    };
    push(dect("2002", None));
    push(dect("2003", None));
    for i in 0..10 {
        push(sip(&format!("30{i:02}"), "pw"));
    }
    w.drain(&mut b).await;
    // a resync that mentions only the SIP users would delete every OMM user
    w.feed.push(msg(100, Command::SyncStarted));
    for i in 0..10 {
        w.feed.push(msg(101 + i, sip(&format!("30{i:02}"), "pw")));
    }
    w.feed.push(msg(200, Command::SyncEnded));
    w.drain(&mut b).await;
    assert_eq!(w.dect.numbers(), ["2002", "2003"], "refused by the guard");
    let j = w.state.journal(200).unwrap();
    assert_eq!(j.status, JournalStatus::Dead);
    assert!(j.reason.unwrap().contains("2 of 2 owned OMM users"));
}

#[tokio::test]
async fn a_resync_recreates_an_omm_user_deleted_behind_our_back() {
    let w = World::new();
    let mut b = w.broker().await;
    w.feed.push(msg(1, dect("2002", Some("03587 0412396 2"))));
    w.drain(&mut b).await;
    w.dect.remove_behind_back("2002");
    w.feed.push(msg(2, Command::SyncStarted));
    w.feed.push(msg(3, dect("2002", Some("03587 0412396 2"))));
    w.feed.push(msg(4, Command::SyncEnded));
    w.drain(&mut b).await;
    let u = w.dect.user("2002").expect("re-created by the resync");
    assert_eq!(u.handset.as_deref(), Some("03587 0412396 2"));
}

#[tokio::test]
async fn a_handset_is_never_taken_from_a_user_someone_else_owns() {
    let w = World::new();
    w.dect.seed_foreign_with_handset("3000", "03587 0412396 2");
    let mut b = w.broker().await;
    w.feed.push(msg(1, dect("2002", Some("03587 0412396 2"))));
    w.drain(&mut b).await;
    let j = w.state.journal(1).unwrap();
    assert_eq!(j.status, JournalStatus::Dead);
    assert!(j.reason.unwrap().contains("not ours"));
    assert_eq!(
        w.dect.user("3000").unwrap().handset.as_deref(),
        Some("03587 0412396 2")
    );
}

/// Everything logged while `f` runs, as text.
async fn logged<F: Future<Output = ()>>(f: F) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || out.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    f.await;
    drop(guard);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn every_dead_letter_and_ignored_message_logs_one_line() {
    let w = World::new();
    w.dect.seed_foreign("2002", "Someone else's");
    let mut b = w.broker().await;
    w.feed.push(msg(1, dect("2002", None)));
    w.feed.push(msg(2, Command::CallExtension(n("2001"))));
    w.feed.push(msg(3, sip("2003", "s3cretPw")));
    let log = logged(w.drain(&mut b)).await;
    let dead: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dead-lettered"))
        .collect();
    let ignored: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("message ignored"))
        .collect();
    assert_eq!(dead.len(), 1, "{log}");
    assert!(dead[0].contains("ERROR") && dead[0].contains("id=1") && dead[0].contains("2002"));
    assert_eq!(ignored.len(), 1, "{log}");
    assert!(ignored[0].contains("WARN") && ignored[0].contains("id=2"));
    assert!(
        !log.contains("s3cretPw") && !log.contains("05704191"),
        "{log}"
    );
}

#[tokio::test]
async fn after_a_round_that_waited_fewer_messages_are_tried_then_more_again() {
    let w = World::new();
    let mut b = w.broker().await;
    for i in 0..100 {
        w.feed.push(msg(i + 1, sip(&format!("3{i:03}"), "pw")));
    }
    w.sip.fail_next(1);
    let batch = w.feed.next_batch().await.unwrap();
    let r = b.process(batch).await;
    assert_eq!((r.acked.len(), r.retry), (0, 100));
    // half of what was tried, in GURU3 order; the rest waits behind it
    let r = b.retry().await;
    assert_eq!(r.acked, (1..=50).collect::<Vec<i64>>());
    assert_eq!(r.retry, 50);
    let r = b.retry().await;
    assert_eq!(r.acked, (51..=100).collect::<Vec<i64>>());
    assert_eq!(r.retry, 0);
}

/// A resync whose sweep fails at its last step (the state commit) and then dies: the resync
/// stays open, the in-memory mirror keeps what was not committed, and the SYNC_ENDED that
/// comes again finishes the sweep, with the same broker or after a restart.
#[tokio::test]
async fn an_interrupted_sweep_is_finished_by_the_sync_ended_that_comes_again() {
    for restart in [false, true] {
        let w = World::new();
        let mut b = w.broker().await;
        for (i, c) in [sip("2001", "a"), dect("2002", None), dect("2003", None)]
            .into_iter()
            .enumerate()
        {
            w.feed.push(msg(i as i64 + 1, c));
        }
        w.drain(&mut b).await;
        w.feed.push(msg(10, Command::SyncStarted));
        w.feed.push(msg(11, sip("2001", "a")));
        w.feed.push(msg(12, dect("2002", None)));
        w.drain(&mut b).await;
        // SYNC_ENDED: the PBX and the OMM are swept, then the state commit fails
        w.state.set_down(true);
        w.feed.push(msg(13, Command::SyncEnded));
        let batch = w.feed.next_batch().await.unwrap();
        assert!(b.process(batch).await.acked.is_empty());
        assert_eq!(w.sip.numbers(), ["2001", "2002"]);
        assert!(
            b.mirror(&n("2003")).is_some(),
            "the mirror changed before its state was committed"
        );
        assert_eq!(b.status().lock().unwrap().sync_epoch, Some(1));
        w.state.set_down(false);
        if restart {
            drop(b);
            b = w.broker().await;
            assert_eq!(
                b.status().lock().unwrap().sync_epoch,
                Some(1),
                "the resync is still open after the restart"
            );
        }
        w.drain(&mut b).await;
        assert_eq!(w.dect.numbers(), ["2002"]);
        assert!(b.mirror(&n("2003")).is_none());
        assert_eq!(b.status().lock().unwrap().sync_epoch, None);
        // and what was committed says so too
        let b = w.broker().await;
        assert!(b.mirror(&n("2003")).is_none(), "restart {restart}");
        assert_eq!(b.status().lock().unwrap().sync_epoch, None);
    }
}

/// A message whose PBX change runs past the statement timeout every time, while the PBX
/// answers everything else: the messages before and after it go through, it is tried alone,
/// its attempts count once the PBX is seen answering, and it ends as a dead letter with its
/// reason (production limits). A real outage (the next test's PBX down) never gets there.
#[tokio::test]
async fn a_message_that_times_out_alone_while_the_pbx_answers_is_dead_lettered() {
    let w = World::new();
    let mut b = w.broker().await;
    w.sip.make_heavy("2002");
    for (i, c) in [sip("2001", "a"), sip("2002", "b"), sip("2003", "c")]
        .into_iter()
        .enumerate()
    {
        w.feed.push(msg(i as i64 + 1, c));
    }
    let batch = w.feed.next_batch().await.unwrap();
    let mut acked = b.process(batch).await.acked;
    for _ in 0..60 {
        if acked.len() == 3 {
            break;
        }
        w.clock.advance(std::time::Duration::from_secs(60));
        acked.extend(b.retry().await.acked);
    }
    assert_eq!(acked, [1, 2, 3]);
    assert_eq!(w.sip.numbers(), ["2001", "2003"]);
    let j = w.state.journal(2).unwrap();
    assert_eq!(j.status, JournalStatus::Dead);
    assert!(j.reason.unwrap().contains("statement timeout"));
    let s = b.status().lock().unwrap().clone();
    assert_eq!((s.done, s.dead), (2, 1));
    assert!(s.stalled.is_none());
}

#[tokio::test]
async fn time_outs_while_the_pbx_answers_nothing_stall_and_lose_nothing() {
    let w = World::new();
    let mut b = Broker::start(w.ports(), tight()).await.unwrap();
    w.sip.make_heavy("2002");
    w.sip.set_down(true);
    w.feed.push(msg(1, sip("2002", "b")));
    let batch = w.feed.next_batch().await.unwrap();
    assert!(b.process(batch).await.acked.is_empty());
    wait_out(&w, &mut b, 10).await;
    assert!(w.state.with_status(JournalStatus::Dead).is_empty());
}

#[tokio::test]
async fn outcomes_are_counted_by_message_type_within_a_bound() {
    let w = World::new();
    let mut b = w.broker().await;
    let mut m = msg(1, sip("2001", "a"));
    m.kind = "UPDATE_EXTENSION".into();
    w.feed.push(m);
    // GURU3 may send types this build does not know, under any name
    for (i, kind) in ["TELEPORT_EXTENSION", "x\"}y", "lower_case"]
        .into_iter()
        .enumerate()
    {
        let mut m = msg(i as i64 + 2, Command::Unknown { kind: kind.into() });
        m.kind = kind.into();
        w.feed.push(m);
    }
    w.drain(&mut b).await;
    let s = b.status().lock().unwrap().clone();
    let by: Vec<(String, (u64, u64, u64))> = s
        .by_type
        .iter()
        .map(|(k, o)| (k.clone(), (o.done, o.ignored, o.dead)))
        .collect();
    assert_eq!(
        by,
        [
            ("TELEPORT_EXTENSION".to_owned(), (0, 1, 0)),
            ("UPDATE_EXTENSION".to_owned(), (1, 0, 0)),
            ("other".to_owned(), (0, 2, 0)),
        ]
    );
    // a flood of new names stays within the bound
    for i in 0..100 {
        let kind = format!("NEW_TYPE_{}", "A".repeat(i % 40));
        let mut m = msg(100 + i as i64, Command::Unknown { kind: kind.clone() });
        m.kind = kind;
        w.feed.push(m);
    }
    w.drain(&mut b).await;
    assert!(b.status().lock().unwrap().by_type.len() <= broker_core::MAX_TYPES);
}

/// The breaker: an OMM that refuses every user with the same code (say, after a firmware
/// change) makes every DECT message a dead letter. The fifth in a row stops the queue instead
/// of draining it; nothing is journaled or acked; when the OMM takes users again, all of them
/// are applied, none lost.
#[tokio::test]
async fn dead_letters_in_a_row_with_one_reason_stop_the_queue_and_are_retried() {
    let w = World::new();
    let mut b = w.broker().await;
    for i in 1..=7 {
        w.feed.push(msg(i, dect(&format!("20{i:02}"), None)));
    }
    w.dect.reject_all(Some("EInvalidArgs"));
    let batch = w.feed.next_batch().await.unwrap();
    let r = b.process(batch).await;
    assert_eq!((r.acked.len(), r.retry), (0, 7), "nothing acked: {r:?}");
    {
        let st = b.status();
        let st = st.lock().unwrap();
        let stall = st.stalled.as_ref().expect("the breaker stops the queue");
        assert!(stall.refused, "{stall:?}");
        assert_eq!(
            stall.message, 1,
            "the streak's first message heads the queue"
        );
        assert!(
            stall.reason.contains("5 messages in a row") && stall.reason.contains("EInvalidArgs"),
            "{stall:?}"
        );
        assert_eq!((st.dead, st.unconfirmed_dead), (0, 0));
    }
    assert!(w.state.with_status(JournalStatus::Dead).is_empty());
    // still refused: the queue keeps standing, one probe a round
    let calls = w.dect.calls();
    let r = b.retry().await;
    assert_eq!((r.acked.len(), r.retry), (0, 7));
    assert_eq!(
        w.dect.calls() - calls,
        1,
        "only the head is tried while refused"
    );
    // the OMM takes users again: every message is applied, in order, once
    w.dect.reject_all(None);
    let mut acked = Vec::new();
    while b.pending_retry() > 0 {
        acked.extend(b.retry().await.acked);
    }
    assert_eq!(acked, (1..=7).collect::<Vec<i64>>());
    assert_eq!(w.dect.numbers().len(), 7);
    assert!(w.state.with_status(JournalStatus::Dead).is_empty());
    let st = b.status();
    let st = st.lock().unwrap();
    assert!(st.stalled.is_none());
    assert_eq!((st.done, st.dead), (7, 0));
}

/// Fewer than the breaker's count: the dead letters are final once a later message is
/// applied (journaled, counted and acked in that round), and GURU3 handing them out again
/// meanwhile runs nothing twice.
#[tokio::test]
async fn a_short_run_of_dead_letters_is_final_when_a_message_is_applied() {
    let w = World::new();
    let mut b = w.broker().await;
    w.feed.push(msg(1, dect("2001", None)));
    w.feed.push(msg(2, dect("2002", None)));
    w.dect.reject_all(Some("EInvalidArgs"));
    let batch = w.feed.next_batch().await.unwrap();
    let r = b.process(batch).await;
    assert_eq!((r.acked.len(), r.retry), (0, 0), "held, not waiting: {r:?}");
    assert_eq!(b.status().lock().unwrap().unconfirmed_dead, 2);
    assert!(b.status().lock().unwrap().stalled.is_none());
    // GURU3 hands them out again with the next message: they are not run again
    w.feed.push(msg(3, group("1100")));
    let calls = w.dect.calls();
    let batch = w.feed.next_batch().await.unwrap();
    assert_eq!(batch.len(), 3);
    let r = b.process(batch).await;
    assert_eq!(w.dect.calls(), calls, "held messages are not run twice");
    assert_eq!(r.acked, [1, 2, 3]);
    for id in [1, 2] {
        let j = w.state.journal(id).unwrap();
        assert_eq!(j.status, JournalStatus::Dead);
        assert!(j.reason.unwrap().contains("EInvalidArgs"));
    }
    let st = b.status();
    let st = st.lock().unwrap();
    assert_eq!((st.done, st.dead, st.unconfirmed_dead), (1, 2, 0));
}

/// Dead letters of different reasons are no streak; and one that has no successor ends by
/// itself after the breaker's window (the loop wakes for it, without a new message).
#[tokio::test]
async fn other_reasons_break_a_streak_and_a_lone_one_ends_after_the_window() {
    let w = World::new();
    let mut b = w.broker().await;
    for (i, code) in ["EA", "EB", "EA", "EB", "EA", "EB"].iter().enumerate() {
        w.dect.reject_all(Some(code));
        w.feed
            .push(msg(i as i64 + 1, dect(&format!("200{i}"), None)));
        let batch: Vec<Incoming> = w
            .feed
            .next_batch()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.id == i as i64 + 1)
            .collect();
        let r = b.process(batch).await;
        // each new reason makes the one before final
        let want: Vec<i64> = if i == 0 { vec![] } else { vec![i as i64] };
        assert_eq!(r.acked, want);
        w.feed.ack(r.acked).await.unwrap();
        assert!(b.status().lock().unwrap().stalled.is_none());
    }
    // the last one ends by itself in the delivery loop
    run_until_acked(&w, b).await;
    assert_eq!(w.state.with_status(JournalStatus::Dead).len(), 6);
    assert!(w.clock.slept() >= BrokerConfig::default().breaker_window);
}

/// The status keeps the latest finished messages (for the status page), bounded, each with
/// its place among all finished so far, its number, outcome and reason.
#[tokio::test]
async fn the_status_lists_the_latest_finished_messages_with_their_outcome() {
    let w = World::new();
    w.dect.seed_foreign("2002", "Someone else's");
    let mut b = w.broker().await;
    let k = broker_core::RECENT as i64 + 10;
    for i in 0..k {
        w.feed.push(msg(i + 1, sip(&format!("3{i:04}"), "pw")));
    }
    w.feed.push(msg(k + 1, dect("2002", None)));
    w.feed.push(msg(k + 2, Command::CallExtension(n("2001"))));
    w.drain(&mut b).await;
    let st = b.status().lock().unwrap().clone();
    assert_eq!(st.finished, k as u64 + 2);
    assert_eq!(st.recent.len(), broker_core::RECENT);
    assert_eq!(st.recent.front().map(|r| (r.seq, r.id)), Some((13, 13)));
    let last: Vec<_> = st.recent.iter().rev().take(3).collect();
    assert_eq!(last[2].outcome, broker_core::Outcome::Done);
    assert_eq!(last[2].number, Some(format!("3{:04}", k - 1)));
    assert_eq!(last[1].outcome, broker_core::Outcome::Dead);
    assert!(last[1].reason.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(last[0].outcome, broker_core::Outcome::Ignored);
    assert_eq!(last[0].seq, k as u64 + 2);
}
