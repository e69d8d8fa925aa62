//! The cases: each provisions through GURU3 and asserts what Asterisk does.

use std::time::{Duration, Instant};

use guru3_sim::{Extension, Forward, Kind, Member};

use crate::sipp::Answer;
use crate::{Interop, Options, Schema, eventually};

fn sip(number: &str, name: &str) -> Extension {
    Extension::new(number, name, Kind::sip())
}

fn dect(number: &str, name: &str, display: &str) -> Extension {
    Extension::new(
        number,
        name,
        Kind::Dect {
            token: String::new(),
            encryption: false,
            display: display.into(),
        },
    )
}

fn forward(mut e: Extension, mode: &str, target: &str, delay: u32) -> Extension {
    e.forward = Some(Forward {
        target: target.into(),
        mode: mode.into(),
        delay,
    });
    e
}

/// REGISTER with the provisioned credentials, a wrong password, after a delete and a rename,
/// and `pjsip show endpoints` equal to GURU3's users after a resync; on both schemas.
async fn registration(schema: Schema) {
    let Some(w) = Interop::start(schema, Options::default(), |g| {
        g.save(sip("2001", "Alice")).unwrap();
        g.save(dect("2002", "Bob", "NUMBER_NAME")).unwrap();
        g.save(sip("2003", "Carol")).unwrap();
    })
    .await
    else {
        return;
    };
    let s = &w.sip;
    let (p1, p2) = (w.password("2001").await, w.password("2002").await);
    let t0 = Instant::now();
    assert!(
        s.register("2001", &p1, crate::sipp::free_udp_port()).await,
        "SIP user registers with GURU3's password"
    );
    eprintln!("REGISTER 200 in {:?}", t0.elapsed());
    assert!(
        s.register("2002", &p2, crate::sipp::free_udp_port()).await,
        "DECT user registers with hexidian's password (as the OMM does)"
    );
    assert!(
        s.register_refused("2001", "wrong-password").await,
        "a wrong password is refused"
    );
    assert_eq!(w.ast.endpoints(), w.guru3_users());

    w.guru3.delete("2003").unwrap();
    w.guru3.rename("2002", "2202").unwrap();
    w.drained().await;
    let p3 = w
        .guru3
        .extension("2001")
        .map(|_| p1.clone())
        .unwrap_or_default();
    assert!(
        s.register_refused("2003", &p3).await,
        "a deleted extension can no longer register"
    );
    assert!(
        s.register_refused("2002", &p2).await,
        "the old number of a renamed extension is gone"
    );
    assert!(
        s.register("2202", &p2, crate::sipp::free_udp_port()).await,
        "the renamed extension registers under its new number, same password"
    );
    w.guru3.resync();
    w.drained().await;
    assert_eq!(
        w.ast.endpoints(),
        w.guru3_users(),
        "after a resync Asterisk lists exactly GURU3's users"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_follows_provisioning() {
    registration(Schema::Modern).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_follows_provisioning_on_the_legacy_schema() {
    registration(Schema::Legacy).await;
}

/// A call group rings its members after their delays, never a paused one, and the first
/// answer cancels the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_rings_members_in_delay_order_and_the_first_answer_cancels_the_rest() {
    let Some(w) = Interop::start(Schema::Modern, Options::default(), |g| {
        for (n, name) in [
            ("2001", "M0"),
            ("2002", "M2"),
            ("2003", "M4"),
            ("2004", "Paused"),
            ("2005", "Caller"),
            ("2006", "Multiring owner"),
            ("2007", "Multiring member"),
        ] {
            g.save(sip(n, name)).unwrap();
        }
        // multiring: 2006 rings itself and 2007 after 3 s
        g.set_members("2006", vec![Member::new("2007", 3)]).unwrap();
        g.save(Extension::new("1100", "Team", Kind::group("TM")))
            .unwrap();
        let paused = Member {
            active: false,
            ..Member::new("2004", 0)
        };
        g.set_members(
            "1100",
            vec![
                Member::new("2003", 4),
                Member::new("2001", 0),
                paused,
                Member::new("2002", 2),
            ],
        )
        .unwrap();
        // nested: 1200 rings 2007 at once and team 1100 two seconds later, each member of
        // 1100 after its own delay on top
        g.save(Extension::new("1200", "Outer", Kind::group("OU")))
            .unwrap();
        g.set_members("1200", vec![Member::new("1100", 2), Member::new("2007", 0)])
            .unwrap();
    })
    .await
    else {
        return;
    };
    let s = &w.sip;
    let mut m0 = s
        .phone("2001", &w.password("2001").await, Answer::Ring)
        .await;
    let mut m2 = s
        .phone("2002", &w.password("2002").await, Answer::Ring)
        .await;
    let mut m4 = s
        .phone(
            "2003",
            &w.password("2003").await,
            Answer::After(Duration::from_millis(1000)),
        )
        .await;
    let paused = s
        .phone("2004", &w.password("2004").await, Answer::Ring)
        .await;
    let code = s
        .call(
            "2005",
            &w.password("2005").await,
            "1100",
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(
        code,
        200,
        "the group call is answered; INVITEs 2001 {}, 2002 {}, 2003 {}; asterisk:\n{}",
        m0.invites().len(),
        m2.invites().len(),
        m4.invites().len(),
        w.ast.log_tail()
    );
    assert!(
        m0.finished(Duration::from_secs(10)).await,
        "2001 was cancelled"
    );
    assert!(
        m2.finished(Duration::from_secs(10)).await,
        "2002 was cancelled"
    );
    assert!(m4.finished(Duration::from_secs(10)).await, "2003 answered");
    assert!(paused.invites().is_empty(), "a paused member never rings");
    let at = |p: &crate::sipp::Phone| {
        let i = p.invites();
        assert_eq!(i.len(), 1, "{} got {} INVITEs", p.number, i.len());
        i[0].clone()
    };
    let (i0, i2, i4) = (at(&m0), at(&m2), at(&m4));
    let (d2, d4) = (i2.at - i0.at, i4.at - i0.at);
    eprintln!("group 1100: member INVITEs at +0.000 s, +{d2:.3} s, +{d4:.3} s (delays 0, 2, 4)");
    assert!((1.5..3.0).contains(&d2), "2 s member rang at +{d2:.3} s");
    assert!((3.5..5.0).contains(&d4), "4 s member rang at +{d4:.3} s");
    assert!(
        i0.from.starts_with("\"[TM] Caller\""),
        "the group's short name tags the caller: {}",
        i0.from
    );

    // multiring: the owner at once, its member after 3 s, the member answers
    let mut owner = s
        .phone("2006", &w.password("2006").await, Answer::Ring)
        .await;
    let mut member = s
        .phone(
            "2007",
            &w.password("2007").await,
            Answer::After(Duration::from_millis(500)),
        )
        .await;
    let code = s
        .call(
            "2005",
            &w.password("2005").await,
            "2006",
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(code, 200, "the multiring call is answered by the member");
    assert!(
        owner.finished(Duration::from_secs(10)).await,
        "owner cancelled"
    );
    assert!(member.finished(Duration::from_secs(10)).await);
    let d = at(&member).at - at(&owner).at;
    eprintln!("multiring 2006: owner INVITE at +0.000 s, member at +{d:.3} s (delay 3)");
    assert!(
        (2.5..4.0).contains(&d),
        "multiring member rang at +{d:.3} s"
    );

    // nested: the outer group's direct member at once, the inner group's members after the
    // inner group's delay plus their own, the paused one never
    let mut direct = s
        .phone("2007", &w.password("2007").await, Answer::Ring)
        .await;
    let mut n0 = s
        .phone("2001", &w.password("2001").await, Answer::Ring)
        .await;
    let mut n2 = s
        .phone("2002", &w.password("2002").await, Answer::Ring)
        .await;
    let mut n4 = s
        .phone(
            "2003",
            &w.password("2003").await,
            Answer::After(Duration::from_millis(500)),
        )
        .await;
    let paused = s
        .phone("2004", &w.password("2004").await, Answer::Ring)
        .await;
    let code = s
        .call(
            "2005",
            &w.password("2005").await,
            "1200",
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(
        code,
        200,
        "the nested group call is answered; asterisk:\n{}",
        w.ast.log_tail()
    );
    for (p, what) in [
        (&mut direct, "2007 cancelled"),
        (&mut n0, "2001 cancelled"),
        (&mut n2, "2002 cancelled"),
        (&mut n4, "2003 answered"),
    ] {
        assert!(p.finished(Duration::from_secs(10)).await, "{what}");
    }
    assert!(paused.invites().is_empty(), "a paused member never rings");
    let t0 = at(&direct).at;
    let (d0, d2, d4) = (at(&n0).at - t0, at(&n2).at - t0, at(&n4).at - t0);
    eprintln!(
        "nested group 1200: INVITEs 2007 +0.000 s, 2001 +{d0:.3} s, 2002 +{d2:.3} s, \
         2003 +{d4:.3} s (delays 0, 2, 4, 6)"
    );
    assert!((1.5..3.0).contains(&d0), "2001 rang at +{d0:.3} s");
    assert!((3.5..5.0).contains(&d2), "2002 rang at +{d2:.3} s");
    assert!((5.5..7.0).contains(&d4), "2003 rang at +{d4:.3} s");
    assert!(
        at(&direct).from.starts_with("\"[OU] Caller\""),
        "the outer group's short name tags the caller: {}",
        at(&direct).from
    );
}

/// The three forward modes, a forward to a number hexidian does not provision, and a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_follow_their_mode_and_a_loop_fails_cleanly() {
    let Some(w) = Interop::start(Schema::Modern, Options::default(), |g| {
        g.save(sip("2002", "Target")).unwrap();
        g.save(sip("2009", "Caller")).unwrap();
        g.save(Extension::new(
            "2999",
            "Gsm",
            Kind::Gsm {
                token: String::new(),
            },
        ))
        .unwrap();
        g.save(sip("2001", "Delayed")).unwrap();
        g.save(sip("2003", "Busy")).unwrap();
        g.save(sip("2004", "Absent")).unwrap();
        g.save(sip("2005", "Unprovisioned target")).unwrap();
        g.save(sip("2006", "Loop A")).unwrap();
        g.save(sip("2007", "Loop B")).unwrap();
        // pass 2 of GURU3: the forwards, once every target exists
        g.edit("2001", |e| *e = forward(e.clone(), "ENABLED", "2002", 2))
            .unwrap();
        g.edit("2003", |e| *e = forward(e.clone(), "ON_BUSY", "2002", 0))
            .unwrap();
        g.edit("2004", |e| {
            *e = forward(e.clone(), "ON_UNAVAILABLE", "2002", 0)
        })
        .unwrap();
        g.edit("2005", |e| *e = forward(e.clone(), "ENABLED", "2999", 0))
            .unwrap();
        g.edit("2006", |e| *e = forward(e.clone(), "ENABLED", "2007", 0))
            .unwrap();
        g.edit("2007", |e| *e = forward(e.clone(), "ENABLED", "2006", 0))
            .unwrap();
    })
    .await
    else {
        return;
    };
    let s = &w.sip;
    let caller = w.password("2009").await;
    let target = w.password("2002").await;
    let hold = Duration::from_millis(300);
    let answer = Answer::After(Duration::from_millis(200));

    // ENABLED after 2 s: 2001 rings, then 2002 takes over
    let mut first = s
        .phone("2001", &w.password("2001").await, Answer::Ring)
        .await;
    let mut t = s.phone("2002", &target, answer).await;
    assert_eq!(s.call("2009", &caller, "2001", hold).await, 200);
    assert!(first.finished(Duration::from_secs(10)).await);
    assert!(t.finished(Duration::from_secs(10)).await);
    let gap = t.invites()[0].at - first.invites()[0].at;
    eprintln!("forward ENABLED 2 s: target rang {gap:.3} s after the forwarding phone");
    assert!((1.5..3.0).contains(&gap), "forward after {gap:.3} s");

    // ON_BUSY: the busy phone gives 486, the target rings
    let mut busy = s
        .phone("2003", &w.password("2003").await, Answer::Busy)
        .await;
    let mut t = s.phone("2002", &target, answer).await;
    assert_eq!(s.call("2009", &caller, "2003", hold).await, 200);
    assert!(busy.finished(Duration::from_secs(10)).await);
    assert!(t.finished(Duration::from_secs(10)).await);
    assert_eq!(busy.invites().len(), 1);

    // ON_UNAVAILABLE: 2004 never registered, the target rings at once
    let mut t = s.phone("2002", &target, answer).await;
    let t0 = Instant::now();
    assert_eq!(s.call("2009", &caller, "2004", hold).await, 200);
    assert!(t.finished(Duration::from_secs(10)).await);
    eprintln!(
        "forward ON_UNAVAILABLE: answered call over in {:?}",
        t0.elapsed()
    );

    // a forward to a number hexidian does not provision is skipped: 2005 itself rings
    let mut own = s.phone("2005", &w.password("2005").await, answer).await;
    assert_eq!(s.call("2009", &caller, "2005", hold).await, 200);
    assert!(own.finished(Duration::from_secs(10)).await);

    // 2006 -> 2007 -> 2006 ...: a clean failure, no hang
    let t0 = Instant::now();
    let code = s.call("2009", &caller, "2006", hold).await;
    eprintln!("forward loop: {code} after {:?}", t0.elapsed());
    assert_eq!(code, 503, "a forward loop ends in 503");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(w.ast.log().contains("hexidian forward loop at"));
}

/// Call waiting off: a second caller gets busy while the user is in a call. Dial-out only
/// for `allow_dialout`; a prefix trunk gets every number below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_waiting_dial_out_and_trunks() {
    let options = Options {
        pbx: "dialout_prefix = \"0\"\ndialout_endpoint = \"2050\"",
    };
    let Some(w) = Interop::start(Schema::Modern, options, |g| {
        let mut busy = sip("2008", "No waiting");
        busy.call_waiting = false;
        g.save(busy).unwrap();
        g.save(sip("2009", "First caller")).unwrap();
        g.save(sip("2010", "Second caller")).unwrap();
        let mut out = sip("2011", "May dial out");
        out.allow_dialout = true;
        g.save(out).unwrap();
        g.save(sip("2012", "May not")).unwrap();
        g.save(sip("2050", "Gateway")).unwrap();
        let mut trunk = sip("2060", "Trunk");
        trunk.trunk = true;
        g.save(trunk).unwrap();
    })
    .await
    else {
        return;
    };
    let s = &w.sip;
    // call waiting off
    let mut phone = s
        .phone(
            "2008",
            &w.password("2008").await,
            Answer::After(Duration::ZERO),
        )
        .await;
    let first = {
        let pw = w.password("2009").await;
        let sip = &w.sip;
        async move { sip.call("2009", &pw, "2008", Duration::from_secs(4)).await }
    };
    let second = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.sip
            .call(
                "2010",
                &w.password("2010").await,
                "2008",
                Duration::from_millis(100),
            )
            .await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!(a, 200);
    assert_eq!(b, 486, "call waiting off: the second caller hears busy");
    assert!(phone.finished(Duration::from_secs(10)).await);
    assert_eq!(
        phone.invites().len(),
        1,
        "the busy phone was not offered the call"
    );

    // dial-out
    let mut gw = s
        .phone(
            "2050",
            &w.password("2050").await,
            Answer::After(Duration::ZERO),
        )
        .await;
    let pw = w.password("2011").await;
    assert_eq!(
        s.call("2011", &pw, "0301234567", Duration::from_millis(200))
            .await,
        200
    );
    assert!(gw.finished(Duration::from_secs(10)).await);
    let pw = w.password("2012").await;
    assert_eq!(
        s.call("2012", &pw, "0301234567", Duration::from_millis(200))
            .await,
        403,
        "no allow_dialout: refused"
    );
    // trunk: the full number reaches the trunk's phone
    let mut trunk = s
        .phone(
            "2060",
            &w.password("2060").await,
            Answer::After(Duration::ZERO),
        )
        .await;
    let pw = w.password("2012").await;
    assert_eq!(
        s.call("2012", &pw, "2060777", Duration::from_millis(200))
            .await,
        200
    );
    assert!(trunk.finished(Duration::from_secs(10)).await);
    assert_eq!(trunk.request_users(), ["2060777"]);
    assert_eq!(gw.request_users(), ["0301234567"]);
    // an unknown number
    assert_eq!(
        s.call("2012", &pw, "4711", Duration::from_millis(200))
            .await,
        404
    );
}

/// What a DECT callee's handset is sent of the caller, per `displayModus`, hostile names
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_modus_decides_what_a_dect_callee_is_shown() {
    let Some(w) = Interop::start(Schema::Modern, Options::default(), |g| {
        g.save(sip("2001", "Lena")).unwrap();
        g.save(sip("2002", "Evil, \"Quote\" ${EXTEN} (x)")).unwrap();
        g.save(dect("2101", "Number", "NUMBER")).unwrap();
        g.save(dect("2102", "Both", "NUMBER_NAME")).unwrap();
        g.save(dect("2103", "Name", "NAME")).unwrap();
        g.save(sip("2104", "Sip callee")).unwrap();
    })
    .await
    else {
        return;
    };
    let s = &w.sip;
    let lena = w.password("2001").await;
    let mut seen = Vec::new();
    for callee in ["2101", "2102", "2103", "2104"] {
        let mut p = s
            .phone(
                callee,
                &w.password(callee).await,
                Answer::After(Duration::ZERO),
            )
            .await;
        assert_eq!(
            s.call("2001", &lena, callee, Duration::from_millis(100))
                .await,
            200
        );
        assert!(p.finished(Duration::from_secs(10)).await);
        let from = p.invites()[0].from.clone();
        eprintln!("{callee}: From: {from}");
        seen.push(from);
    }
    assert!(
        seen[0].starts_with("<sip:2001@"),
        "NUMBER: no name: {}",
        seen[0]
    );
    assert!(
        seen[1].starts_with("\"Lena 2001\" <sip:2001@"),
        "NUMBER_NAME: {}",
        seen[1]
    );
    assert!(
        seen[2].starts_with("\"Lena\" <sip:2001@"),
        "NAME: {}",
        seen[2]
    );
    assert!(
        seen[3].starts_with("\"Lena\" <sip:2001@"),
        "SIP callee: {}",
        seen[3]
    );
    // a hostile caller name neither breaks the dialplan nor reaches the callee unsanitised
    let mut p = s
        .phone(
            "2102",
            &w.password("2102").await,
            Answer::After(Duration::ZERO),
        )
        .await;
    assert_eq!(
        s.call(
            "2002",
            &w.password("2002").await,
            "2102",
            Duration::from_millis(100)
        )
        .await,
        200
    );
    assert!(p.finished(Duration::from_secs(10)).await);
    let from = p.invites()[0].from.clone();
    eprintln!("hostile name: From: {from}");
    // quotes sanitised; `${EXTEN}` arrives as text, it was never evaluated by the dialplan
    assert!(
        from.starts_with("\"Evil, 'Quote' ${EXTEN} (x) 2002\" <sip:2002@"),
        "{from}"
    );
}

/// A temporary user may dial only token numbers; its token call goes through func_curl to
/// hexidian, the handset ends up on the extension and the temporary endpoint is gone.
/// Every prompt the shipped dialplan plays exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_call_from_a_temporary_user_binds_the_handset() {
    let Some(w) = Interop::start(Schema::Modern, Options::default(), |g| {
        g.save(dect("2002", "Kiosk", "NUMBER_NAME")).unwrap();
        g.save(sip("2001", "Someone")).unwrap();
    })
    .await
    else {
        return;
    };
    // prompts
    match crate::pbx::sounds() {
        Some(dir) => {
            let dialplan = std::fs::read_to_string(w.kit.join("extensions.conf")).unwrap();
            for p in hexidian::asterisk_kit::prompts(&dialplan) {
                assert!(
                    dir.join("en").join(format!("{p}.gsm")).exists(),
                    "the dialplan plays {p}, which is not in {}",
                    dir.display()
                );
            }
        }
        None => {
            let _: Option<()> = crate::absent("no prompts (asterisk-core-sounds-en-gsm)");
        }
    }
    assert!(
        eventually(Duration::from_secs(10), async || matches!(
            w.omm.view().mode,
            omm_axi_sim::Mode::Wildcard { .. }
        ))
        .await
    );
    let ipei = "01842 0093371 6";
    w.omm.handset_subscribe(ipei, "0000").unwrap();
    let mut temp = String::new();
    assert!(
        eventually(Duration::from_secs(20), async || {
            temp = w
                .ast
                .endpoints()
                .into_iter()
                .find(|e| e.starts_with("0100"))
                .unwrap_or_default();
            !temp.is_empty()
        })
        .await,
        "the temporary user appears in Asterisk"
    );
    let s = &w.sip;
    let pw = w.password(&temp).await;
    assert!(s.register(&temp, &pw, crate::sipp::free_udp_port()).await);
    assert_eq!(
        s.call(&temp, &pw, "2001", Duration::from_millis(100)).await,
        403,
        "a temporary user cannot call extensions"
    );
    let token = match w.guru3.extension("2002").unwrap().kind {
        Kind::Dect { token, .. } => token,
        other => panic!("{other:?}"),
    };
    // a token nobody has: told so, nothing recorded
    assert_eq!(
        s.call_until_bye(&temp, &pw, "99550000000").await,
        200,
        "an unknown token is answered with a prompt"
    );
    assert!(
        w.ast.log().contains("Playing 'pbx-invalid"),
        "an unknown token plays pbx-invalid:\n{}",
        w.ast.log_tail()
    );
    let t0 = Instant::now();
    let code = s.call_until_bye(&temp, &pw, &format!("9955{token}")).await;
    eprintln!(
        "token call: {code}, Asterisk hung up after {:?} (prompt played)",
        t0.elapsed()
    );
    assert_eq!(code, 200, "the token call is answered");
    assert!(
        w.ast
            .log()
            .contains(&format!("hexidian token {token} from {temp}: 'OK'")),
        "func_curl reached hexidian and got OK"
    );
    // recorded, not yet done: the caller is asked for a moment, not thanked for a result
    assert!(
        w.ast.log().contains("Playing 'one-moment-please"),
        "OK plays one-moment-please:\n{}",
        w.ast.log_tail()
    );
    assert!(
        eventually(Duration::from_secs(20), async || {
            let v = w.omm.view();
            v.user_by_num("2002").is_some_and(|(uid, _)| {
                v.devices.iter().any(|(_, d)| {
                    d.get("ipei").map(String::as_str) == Some(ipei)
                        && d.get("uid").map(String::as_str) == Some(uid.to_string().as_str())
                })
            })
        })
        .await,
        "the handset is bound to 2002 in the OMM"
    );
    assert!(
        eventually(Duration::from_secs(20), async || !w
            .ast
            .endpoints()
            .contains(&temp))
        .await,
        "the temporary endpoint is gone from Asterisk"
    );
    assert!(
        !w.ast.log().contains("does not exist"),
        "every prompt played exists:\n{}",
        w.ast.log_tail()
    );
    let _ = w.webhook();
}
