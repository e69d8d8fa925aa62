//! The workflow against the in-memory models of its ports.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::sync::Arc;
use std::time::Duration;

use broker_core::fakes::{MemorySip, SkipClock};
use broker_core::model::{Extension, Handset, Kind, MirrorEntry, Number, Secret, SharedDirectory};
use broker_core::ports::Clock;
use unbound_handsets::fakes::{MemoryAssigns, MemoryHandsetState, MemoryHandsets};
use unbound_handsets::{Blocklist, Config, Reply, TempNumbers, TokenCall, Unbound, WorkflowPorts};

struct World {
    handsets: MemoryHandsets,
    sip: MemorySip,
    state: MemoryHandsetState,
    guru3: MemoryAssigns,
    clock: SkipClock,
    directory: SharedDirectory,
}

impl World {
    fn new() -> Self {
        Self {
            handsets: MemoryHandsets::default(),
            sip: MemorySip::default(),
            state: MemoryHandsetState::default(),
            guru3: MemoryAssigns::default(),
            clock: SkipClock::default(),
            directory: SharedDirectory::default(),
        }
    }

    fn unbound(&self, tweak: impl FnOnce(&mut Config)) -> Unbound {
        let mut c = Config::new(TempNumbers::new("0100", 8).unwrap());
        c.key = Some(Secret::new("k"));
        tweak(&mut c);
        Unbound::new(
            WorkflowPorts {
                handsets: Arc::new(self.handsets.clone()),
                sip: Arc::new(self.sip.clone()),
                state: Arc::new(self.state.clone()),
                guru3: Arc::new(self.guru3.clone()),
                clock: Arc::new(self.clock.clone()),
            },
            c,
            Arc::clone(&self.directory),
        )
    }

    /// A DECT extension as GURU3 has it (and its OMM user, as the broker creates it).
    fn dect(&self, number: &str, token: &str, handset: Option<&str>) {
        let n: Number = number.parse().unwrap();
        self.directory
            .write()
            .unwrap()
            .set(&n, Some(&dect_entry(&n, token, handset)));
        self.handsets.add_user(number);
    }

    /// A DECT extension whose creating message is being applied: the broker has planned it,
    /// its OMM user is not there yet.
    fn dect_planned(&self, number: &str, token: &str) {
        let n: Number = number.parse().unwrap();
        self.directory
            .write()
            .unwrap()
            .plan(&n, Some(&dect_entry(&n, token, None)));
    }
}

fn dect_entry(n: &Number, token: &str, handset: Option<&str>) -> MirrorEntry {
    MirrorEntry {
        extension: Some(Extension {
            number: n.clone(),
            name: "Kiosk".into(),
            kind: Kind::Dect {
                token: Secret::new(token),
                encryption: false,
                handset: handset.map(|i| Handset {
                    ipei: i.into(),
                    uak: Secret::new("AA"),
                }),
            },
            forward: None,
            routing: Default::default(),
        }),
        ..MirrorEntry::default()
    }
}

fn call(caller: &str, token: &str) -> Result<TokenCall, Reply> {
    let body = format!(r#"{{"callerid": "{caller}", "token": "{token}"}}"#);
    TokenCall::parse(Some("application/json"), body.as_bytes())
}

#[tokio::test]
async fn temporary_number_then_token_call_then_bind_and_assign() {
    let w = World::new();
    w.dect("2001", "05704191", None);
    let u = w.unbound(|_| {});
    let ppn = w.handsets.subscribe("01842 0093371 6");
    u.ensure(ppn).await;
    let (temp, is_temp) = w.handsets.device(ppn).unwrap();
    let temp = temp.unwrap();
    assert!(is_temp && temp.starts_with("0100"), "{temp}");
    assert!(
        w.sip.user(&temp).is_some(),
        "the PBX has the temporary user"
    );

    let key = Some(b"k".as_slice());
    assert_eq!(
        u.token_call(Some(b"x"), call(&temp, "05704191"), false)
            .await,
        Reply::Unauthorized
    );
    assert_eq!(
        u.token_call(key, call(&temp, "11111111"), false).await,
        Reply::UnknownToken
    );
    assert_eq!(
        u.token_call(key, call("2001", "05704191"), false).await,
        Reply::NotUnbound
    );
    // a caller that is not a temporary user learns nothing about tokens
    assert_eq!(
        u.token_call(key, call("2001", "11111111"), false).await,
        Reply::NotUnbound
    );
    assert_eq!(
        u.token_call(key, call(&temp, "995505704191"), true).await,
        Reply::Ok
    );
    assert!(w.state.outbox().is_empty());
    assert_eq!(
        u.token_call(key, call(&temp, "05704191"), false).await,
        Reply::Ok
    );
    // the same caller again while the bind is pending: still OK, nothing twice
    assert_eq!(
        u.token_call(key, call(&temp, "05704191"), false).await,
        Reply::Ok
    );
    // not yet due: the prompt is still playing
    u.carry_out_due_binds().await;
    assert_eq!(
        w.handsets.device(ppn).unwrap().0.as_deref(),
        Some(temp.as_str())
    );
    w.clock.sleep(Duration::from_secs(3)).await;
    u.carry_out_due_binds().await;
    assert_eq!(
        w.handsets.device(ppn).unwrap(),
        (Some("2001".into()), false)
    );
    assert!(
        w.sip.user(&temp).is_none(),
        "the temporary PBX user is gone"
    );
    assert!(
        !w.handsets.users().contains(&temp),
        "so is the temporary OMM user"
    );
    // GURU3 away for one round: the ASSIGN_HANDSET waits in the outbox, and is counted
    w.guru3.fail_next(1);
    u.flush_outbox().await;
    assert_eq!(u.status().outbox, 1);
    u.flush_outbox().await;
    assert_eq!(u.status().outbox, 0);
    let sent = w.guru3.assigns();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].ipei.as_str(), sent[0].extension.as_str()),
        ("01842 0093371 6", "2001")
    );
    assert!(w.state.outbox()[0].1.as_ref().is_some_and(|r| r.ok));
    u.flush_outbox().await;
    assert_eq!(
        w.guru3.assigns().len(),
        1,
        "an answered assign is not sent again"
    );
    let s = u.status();
    assert_eq!((s.bound, s.assigns_ok, s.temps_created), (1, 1, 1));

    // another handset cannot take the bound extension
    let other = w.handsets.subscribe("03000 0000006 1");
    u.ensure(other).await;
    let t2 = w.handsets.device(other).unwrap().0.unwrap();
    assert_eq!(
        u.token_call(key, call(&t2, "05704191"), false).await,
        Reply::AlreadyBound
    );
}

#[tokio::test]
async fn known_handsets_return_and_blocked_ones_are_left_alone() {
    let w = World::new();
    w.dect("2002", "1234", Some("03587 0412396 2"));
    let u = w.unbound(|c| c.blocklist = Blocklist::new(vec!["00077 *".into()]));
    let known = w.handsets.subscribe("03587 0412396 2");
    u.ensure(known).await;
    assert_eq!(
        w.handsets.device(known).unwrap(),
        (Some("2002".into()), false)
    );
    let blocked = w.handsets.subscribe("00077 3216549 5");
    u.ensure(blocked).await;
    assert_eq!(w.handsets.device(blocked).unwrap(), (None, false));
    // the extension is deleted: its handset becomes an unbound one
    w.handsets.delete_user("2002");
    w.directory
        .write()
        .unwrap()
        .set(&"2002".parse().unwrap(), None);
    u.ensure(known).await;
    assert!(w.handsets.device(known).unwrap().1, "a temporary number");
    assert_eq!(u.status().returned, 1);
}

#[tokio::test]
async fn outages_answer_retry_and_promised_binds_survive_a_restart() {
    let w = World::new();
    w.dect("2001", "0042", None);
    let u = w.unbound(|_| {});
    let ppn = w.handsets.subscribe("01842 0093371 6");
    u.ensure(ppn).await;
    let temp = w.handsets.device(ppn).unwrap().0.unwrap();
    let key = Some(b"k".as_slice());
    w.handsets.fail_next(1);
    assert_eq!(
        u.token_call(key, call(&temp, "0042"), false).await,
        Reply::Retry
    );
    w.state.fail_next(1);
    assert_eq!(
        u.token_call(key, call(&temp, "0042"), false).await,
        Reply::Retry
    );
    assert_eq!(
        u.token_call(key, call(&temp, "0042"), false).await,
        Reply::Ok
    );
    // the process dies; a new one finds the promise and keeps it
    drop(u);
    let u = w.unbound(|_| {});
    u.resume().await;
    u.carry_out_due_binds().await;
    assert_eq!(
        w.handsets.device(ppn).unwrap(),
        (Some("2001".into()), false)
    );
    // a failing move is retried, not lost
    let w2 = World::new();
    w2.dect("2001", "0042", None);
    let u2 = w2.unbound(|c| c.bind_delay = Duration::ZERO);
    let p2 = w2.handsets.subscribe("01842 0093371 6");
    u2.ensure(p2).await;
    let t2 = w2.handsets.device(p2).unwrap().0.unwrap();
    assert_eq!(
        u2.token_call(key, call(&t2, "0042"), false).await,
        Reply::Ok
    );
    w2.handsets.fail_next(1);
    u2.carry_out_due_binds().await;
    assert!(
        w2.handsets.device(p2).unwrap().1,
        "still temporary after the failed move"
    );
    let shown = u2.status().last_error;
    assert!(
        shown
            .as_deref()
            .is_some_and(|e| e.contains("carrying out a bind")),
        "{shown:?}"
    );
    w2.clock.sleep(Duration::from_secs(2)).await;
    u2.carry_out_due_binds().await;
    assert_eq!(
        w2.handsets.device(p2).unwrap(),
        (Some("2001".into()), false)
    );
    // the bind went through: the status no longer shows its old failure
    assert_eq!(u2.status().last_error, None);
}

/// Real time (the run loop ticks every 100 ms; a skipping clock would make it spin).
#[derive(Debug)]
struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn sleep(&self, d: Duration) -> broker_core::ports::BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

#[tokio::test]
async fn run_reacts_to_events_and_keeps_the_subscription_mode() {
    let w = World::new();
    let mut c = Config::new(TempNumbers::new("0100", 8).unwrap());
    c.subscription_mode = Some("Configured".into());
    let u = Unbound::new(
        WorkflowPorts {
            handsets: Arc::new(w.handsets.clone()),
            sip: Arc::new(w.sip.clone()),
            state: Arc::new(w.state.clone()),
            guru3: Arc::new(w.guru3.clone()),
            clock: Arc::new(TokioClock),
        },
        c,
        Arc::clone(&w.directory),
    );
    let (stopped, stop) = futures_util::future::abortable(futures_util::future::pending::<()>());
    let runner = {
        let u = u.clone();
        tokio::spawn(async move {
            u.run(async move {
                let _ = stopped.await;
            })
            .await;
        })
    };
    let ppn = w.handsets.subscribe("01842 0093371 6");
    for _ in 0..500 {
        if w.handsets.device(ppn).unwrap().1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        w.handsets.device(ppn).unwrap().1,
        "the event gave it a temporary number"
    );
    assert_eq!(w.handsets.mode(), "Configured");
    stop.abort();
    runner.await.unwrap();
}

#[tokio::test]
async fn one_peer_address_has_a_bucket_of_its_own() {
    let w = World::new();
    w.dect("2001", "05704191", None);
    let u = w.unbound(|c| {
        c.per_peer_per_s = 5;
        c.per_caller_per_min = 1000;
    });
    let key = Some(b"k".as_slice());
    let hostile: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let mut answers = Vec::new();
    for i in 0..8 {
        let caller = format!("0100{i:04}");
        answers.push(
            u.token_call_from(Some(hostile), key, call(&caller, "1"), false)
                .await,
        );
    }
    assert_eq!(answers.iter().filter(|r| **r == Reply::TooMany).count(), 3);
    // another address is not affected
    let asterisk: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        u.token_call_from(Some(asterisk), key, call("01009999", "1"), false)
            .await,
        Reply::NotUnbound
    );
    assert_eq!(
        u.token_call_from(
            Some(asterisk),
            Some(b"wrong".as_slice()),
            call("01009999", "1"),
            false
        )
        .await,
        Reply::Unauthorized
    );
    // counted by reason (the five admitted callers are not temporary users either)
    let s = u.status();
    assert_eq!(
        (s.rejected_rate, s.rejected_key, s.rejected_caller),
        (3, 1, 6)
    );
}

#[tokio::test]
async fn an_abandoned_token_call_leaves_no_reservation() {
    let w = World::new();
    w.dect("2001", "05704191", None);
    let u = w.unbound(|_| {});
    let ppn = w.handsets.subscribe("01842 0093371 6");
    u.ensure(ppn).await;
    let temp = w.handsets.device(ppn).unwrap().0.unwrap();
    let key = Some(b"k".as_slice());
    // the database hangs while the bind is recorded; the HTTP deadline gives up
    w.state.stall_binds(true);
    let r = tokio::time::timeout(
        Duration::from_millis(50),
        u.token_call(key, call(&temp, "05704191"), false),
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    w.state.stall_binds(false);
    // the caller tries again: the handset and the extension are free, the bind happens
    assert_eq!(
        u.token_call(key, call(&temp, "05704191"), false).await,
        Reply::Ok
    );
    w.clock.sleep(Duration::from_secs(3)).await;
    u.carry_out_due_binds().await;
    assert_eq!(
        w.handsets.device(ppn).unwrap(),
        (Some("2001".into()), false)
    );
}

#[tokio::test]
async fn temporary_users_are_capped_and_unused_ones_expire() {
    let w = World::new();
    let u = w.unbound(|c| c.max_temporary = 2);
    let ppns: Vec<u32> = ["01842 0093371 6", "01842 0093372 4", "01842 0093373 2"]
        .iter()
        .map(|i| w.handsets.subscribe(i))
        .collect();
    for p in &ppns {
        u.ensure(*p).await;
    }
    let temp_of = |p: u32| w.handsets.device(p).unwrap().0;
    assert!(temp_of(ppns[0]).is_some() && temp_of(ppns[1]).is_some());
    assert_eq!(temp_of(ppns[2]), None, "the third waits: the cap is 2");
    // the first handset leaves; its temporary user expires after 15 minutes
    let gone = temp_of(ppns[0]).unwrap();
    w.handsets.remove_device(ppns[0]);
    u.scan().await;
    assert!(w.handsets.users().contains(&gone), "not yet");
    w.clock.sleep(Duration::from_secs(16 * 60)).await;
    u.scan().await;
    assert!(!w.handsets.users().contains(&gone), "expired in the OMM");
    assert!(w.sip.user(&gone).is_none(), "and in the PBX");
    // the freed slot goes to the waiting handset
    assert!(temp_of(ppns[2]).is_some());
}

#[tokio::test]
async fn a_bind_that_can_never_be_carried_out_ends_and_frees_the_handset() {
    use unbound_handsets::ports::HandsetState;
    let w = World::new();
    w.dect("2001", "0042", None);
    w.dect("2002", "0043", None);
    let u = w.unbound(|c| c.bind_delay = Duration::ZERO);
    let ppn = w.handsets.subscribe("01842 0093371 6");
    u.ensure(ppn).await;
    let temp = w.handsets.device(ppn).unwrap().0.unwrap();
    let key = Some(b"k".as_slice());
    assert_eq!(
        u.token_call(key, call(&temp, "0042"), false).await,
        Reply::Ok
    );
    // the extension is deleted between the call and the bind
    w.handsets.delete_user("2001");
    u.carry_out_due_binds().await;
    assert!(
        w.state.pending_binds().await.unwrap().is_empty(),
        "the bind ended"
    );
    assert!(w.handsets.device(ppn).unwrap().1, "still temporary");
    let s = u.status();
    assert_eq!((s.bound, s.binds_failed), (0, 1));
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("failed for good")),
        "{:?}",
        s.last_error
    );
    // nothing is tried again, and the handset is free to dial another token
    w.clock.sleep(Duration::from_secs(5)).await;
    u.carry_out_due_binds().await;
    assert_eq!(u.status().binds_failed, 1);
    assert_eq!(
        u.token_call(key, call(&temp, "0043"), false).await,
        Reply::Ok
    );
    u.carry_out_due_binds().await;
    assert_eq!(
        w.handsets.device(ppn).unwrap(),
        (Some("2002".into()), false)
    );
    assert_eq!(u.status().bound, 1);
}

#[tokio::test]
async fn a_bind_to_an_extension_whose_omm_user_is_still_to_come_waits_for_it() {
    use unbound_handsets::ports::HandsetState;
    let w = World::new();
    // GURU3's create of 2001 is planned; the OMM is away, so its user does not exist yet
    w.dect_planned("2001", "0042");
    let u = w.unbound(|c| c.bind_delay = Duration::ZERO);
    let ppn = w.handsets.subscribe("01842 0093371 6");
    u.ensure(ppn).await;
    let temp = w.handsets.device(ppn).unwrap().0.unwrap();
    let key = Some(b"k".as_slice());
    assert_eq!(
        u.token_call(key, call(&temp, "0042"), false).await,
        Reply::Ok
    );
    for _ in 0..3 {
        u.carry_out_due_binds().await;
        w.clock.sleep(Duration::from_secs(60)).await;
    }
    assert_eq!(
        w.state.pending_binds().await.unwrap().len(),
        1,
        "still promised"
    );
    assert_eq!(u.status().binds_failed, 0);
    assert!(w.handsets.device(ppn).unwrap().1, "temporary until then");
    // the message is applied: the user exists and the directory settles
    w.dect("2001", "0042", None);
    u.carry_out_due_binds().await;
    assert_eq!(
        w.handsets.device(ppn).unwrap(),
        (Some("2001".into()), false)
    );
    assert_eq!((u.status().bound, u.status().binds_failed), (1, 0));
    assert!(w.state.pending_binds().await.unwrap().is_empty());
}

/// Log lines written while the guard lives (this thread only).
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_periodic_step_that_keeps_failing_warns_once_and_says_when_it_works_again() {
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let w = World::new();
    let u = w.unbound(|_| {});
    // the outbox is flushed every 2 s: a database outage of 20 s
    w.state.fail_next(10);
    for _ in 0..10 {
        u.flush_outbox().await;
    }
    assert!(u.status().last_error.is_some());
    u.flush_outbox().await;
    assert_eq!(u.status().last_error, None);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let warns = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("reading the outbox"))
        .count();
    assert_eq!(warns, 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("reading the outbox works again") && l.contains("failures=10")),
        "{text}"
    );
}
