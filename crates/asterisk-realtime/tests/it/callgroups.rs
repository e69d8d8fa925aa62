use asterisk_realtime::{Change, Member, Route};

use crate::{env, ext, sip};

fn m(number: &str, active: bool, delay: i32) -> Member {
    Member {
        extension: ext(number),
        active,
        delay_s: delay,
    }
}

fn dial(route: &[Route]) -> &str {
    &route[0].dialstring
}

#[tokio::test]
async fn group_members_delays_and_pauses_become_a_route() {
    let e = env().await;
    e.store
        .apply(&[
            Change::UpsertGroup {
                extension: ext("1100"),
                name: "Infodesk".into(),
                short_name: "IN;F".into(),
            },
            Change::SetMembers {
                extension: ext("1100"),
                name: "Infodesk".into(),
                members: vec![
                    m("2001", true, 0),
                    m("2002", false, 0),
                    m("2345", true, 15),
                    m("1100", true, 0),
                    m("2001", true, 5),
                ],
            },
        ])
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| assert!(r.is_ok()));
    let route = e.store.routes(Some(&ext("1100"))).await.unwrap();
    assert_eq!(route[0].short_name, "INF");
    // paused 2002 is skipped, the duplicate 2001 keeps the last delay, the self-reference is dropped
    assert_eq!(
        dial(&route),
        "Local/5-2001@hexidian-cg-leg&Local/15-2345@hexidian-cg-leg"
    );
    let (is_group, members) = e.store.members(&ext("1100")).await.unwrap().unwrap();
    assert!(is_group);
    assert_eq!(members.len(), 3);

    // 2345 becomes a multiring extension: it rings itself and its member, 15 s later
    e.store
        .apply(&[Change::SetMembers {
            extension: ext("2345"),
            name: "Tomás".into(),
            members: vec![m("2004", true, 3)],
        }])
        .await
        .unwrap();
    assert_eq!(
        dial(&e.store.routes(Some(&ext("2345"))).await.unwrap()),
        "Local/0-2345@hexidian-cg-leg&Local/3-2004@hexidian-cg-leg"
    );
    assert_eq!(
        dial(&e.store.routes(Some(&ext("1100"))).await.unwrap()),
        "Local/5-2001@hexidian-cg-leg&Local/15-2345@hexidian-cg-leg&Local/18-2004@hexidian-cg-leg"
    );

    // an empty list switches multiring off and the parent route follows
    e.store
        .apply(&[Change::SetMembers {
            extension: ext("2345"),
            name: "Tomás".into(),
            members: vec![],
        }])
        .await
        .unwrap();
    assert!(e.store.routes(Some(&ext("2345"))).await.unwrap().is_empty());
    assert_eq!(
        dial(&e.store.routes(Some(&ext("1100"))).await.unwrap()),
        "Local/5-2001@hexidian-cg-leg&Local/15-2345@hexidian-cg-leg"
    );
}

#[tokio::test]
async fn nested_groups_loops_and_deletes() {
    let e = env().await;
    e.store
        .apply(&[
            Change::UpsertGroup {
                extension: ext("1000"),
                name: "Alle".into(),
                short_name: String::new(),
            },
            Change::UpsertGroup {
                extension: ext("1100"),
                name: "Infodesk".into(),
                short_name: String::new(),
            },
            Change::SetMembers {
                extension: ext("1000"),
                name: "Alle".into(),
                members: vec![m("1100", true, 0), m("2600", true, 30)],
            },
            Change::SetMembers {
                extension: ext("1100"),
                name: "Infodesk".into(),
                members: vec![m("2001", true, 10), m("1000", true, 0)],
            },
        ])
        .await
        .unwrap();
    // the loop 1000 -> 1100 -> 1000 is cut; 2001 rings once at its earliest time
    assert_eq!(
        dial(&e.store.routes(Some(&ext("1000"))).await.unwrap()),
        "Local/10-2001@hexidian-cg-leg&Local/30-2600@hexidian-cg-leg"
    );

    // deleting a member removes it from every list and refreshes the ancestors
    e.store
        .apply(&[Change::DeleteExtension(ext("2001"))])
        .await
        .unwrap();
    assert_eq!(
        dial(&e.store.routes(Some(&ext("1000"))).await.unwrap()),
        "Local/30-2600@hexidian-cg-leg"
    );
    // 1100 still reaches 2600 through its member group 1000 (the loop back to 1100 is cut)
    assert_eq!(
        dial(&e.store.routes(Some(&ext("1100"))).await.unwrap()),
        "Local/30-2600@hexidian-cg-leg"
    );

    // renaming a member rewrites the lists (GURU3 does not send that cascade)
    e.store.rename(ext("2600"), ext("2601")).await.unwrap();
    assert_eq!(
        dial(&e.store.routes(Some(&ext("1000"))).await.unwrap()),
        "Local/30-2601@hexidian-cg-leg"
    );
    // renaming a group moves its route too
    e.store.rename(ext("1100"), ext("1101")).await.unwrap();
    let routes: Vec<String> = e
        .store
        .routes(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(routes, ["1000", "1101"]);

    // a GROUP that becomes another type with no members disappears
    e.store
        .apply(&[Change::NotGroup {
            extension: ext("1101"),
            name: "now SIP".into(),
        }])
        .await
        .unwrap();
    assert!(
        e.store.members(&ext("1101")).await.unwrap().is_none()
            || !e.store.members(&ext("1101")).await.unwrap().unwrap().0
    );
}

#[tokio::test]
async fn delete_extension_removes_user_group_and_memberships_in_one_go() {
    let e = env().await;
    e.store
        .upsert_user(sip("2345", "Multi", "Secret123"))
        .await
        .unwrap();
    e.store
        .apply(&[
            Change::SetMembers {
                extension: ext("2345"),
                name: "Multi".into(),
                members: vec![m("2002", true, 5)],
            },
            Change::UpsertGroup {
                extension: ext("1100"),
                name: "G".into(),
                short_name: String::new(),
            },
            Change::SetMembers {
                extension: ext("1100"),
                name: "G".into(),
                members: vec![m("2345", true, 0)],
            },
        ])
        .await
        .unwrap();
    e.store
        .apply(&[Change::DeleteExtension(ext("2345"))])
        .await
        .unwrap();
    assert!(crate::rows(&e.sql, "2345").await.is_empty());
    assert!(e.store.members(&ext("2345")).await.unwrap().is_none());
    assert_eq!(dial(&e.store.routes(Some(&ext("1100"))).await.unwrap()), "");
}

#[tokio::test]
async fn a_run_of_member_lists_matches_one_list_at_a_time() {
    let lists = |tag: &str| {
        vec![
            Change::UpsertGroup {
                extension: ext("1100"),
                name: format!("Infodesk {tag}"),
                short_name: "INF".into(),
            },
            Change::SetMembers {
                extension: ext("1100"),
                name: "Infodesk".into(),
                members: vec![
                    m("2001", true, 0),
                    m("2002", false, 0),
                    m("1100", true, 0),
                    m("2345", true, 15),
                ],
            },
            // a multiring list, a nested group and a list that empties an earlier one
            Change::SetMembers {
                extension: ext("2345"),
                name: "Tomás".into(),
                members: vec![m("2002", true, 5), m("2002", true, 7)],
            },
            Change::SetMembers {
                extension: ext("1000"),
                name: "All".into(),
                members: vec![m("1100", true, 0)],
            },
            Change::SetMembers {
                extension: ext("3000"),
                name: "Was multiring".into(),
                members: vec![],
            },
        ]
    };
    // the same changes one per batch (single path) and in one batch (set-based run)
    let single = env().await;
    for c in lists("x") {
        single.store.apply(std::slice::from_ref(&c)).await.unwrap();
    }
    let bulk = env().await;
    let out = bulk.store.apply(&lists("x")).await.unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    async fn rows(e: &crate::Env) -> Vec<String> {
        let q = "SELECT callgroup || ':' || member || ':' || active || ':' || delay_s FROM hexidian.callgroup_member ORDER BY 1";
        e.sql
            .query(q, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }
    assert_eq!(rows(&bulk).await, rows(&single).await);
    assert_eq!(
        rows(&bulk).await,
        [
            "1000:1100:true:0",
            "1100:2001:true:0",
            "1100:2002:false:0",
            "1100:2345:true:15",
            "2345:2002:true:7"
        ]
    );
    assert_eq!(
        bulk.store.routes(None).await.unwrap(),
        single.store.routes(None).await.unwrap()
    );
    let r = bulk.store.routes(Some(&ext("1000"))).await.unwrap();
    // 1000 is a multiring (no group row): it rings itself, and 2345's own multiring member
    // 2002 joins at 15 + 7 s
    assert_eq!(
        dial(&r),
        "Local/0-1000@hexidian-cg-leg&Local/0-2001@hexidian-cg-leg&Local/15-2345@hexidian-cg-leg&Local/22-2002@hexidian-cg-leg",
        "{r:?}"
    );
    // the same run again changes nothing; one changed delay deep inside a run of unchanged
    // lists reaches every group above it, a renamed group inside a run of users its route
    let before = bulk.store.routes(None).await.unwrap();
    assert!(
        bulk.store
            .apply(&lists("x"))
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(bulk.store.routes(None).await.unwrap(), before);
    let mut again = lists("x");
    again[2] = Change::SetMembers {
        extension: ext("2345"),
        name: "Tomás".into(),
        members: vec![m("2002", true, 9)],
    };
    assert!(
        bulk.store
            .apply(&again)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let r = bulk.store.routes(Some(&ext("1000"))).await.unwrap();
    assert!(dial(&r).ends_with("Local/24-2002@hexidian-cg-leg"), "{r:?}");
    let renamed = [
        Change::UpsertUser(crate::dect("2001", "Lena")),
        Change::UpsertGroup {
            extension: ext("1100"),
            name: "Infodesk renamed".into(),
            short_name: "INF".into(),
        },
        Change::UpsertUser(crate::dect("2002", "Tom")),
    ];
    assert!(
        bulk.store
            .apply(&renamed)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let r = bulk.store.routes(Some(&ext("1100"))).await.unwrap();
    assert!(format!("{r:?}").contains("Infodesk renamed"), "{r:?}");
}

#[tokio::test]
async fn set_based_upserts_work_on_the_legacy_schema() {
    let e = crate::env_with(crate::Flavor::Legacy, |c| c).await;
    let out = e
        .store
        .apply(&[
            Change::UpsertUser(sip("2001", "Lena", "Secret123")),
            Change::UpsertUser(crate::dect("2002", "Kiosk")),
            Change::UpsertUser(sip("2003", "Tom", "Secret456")),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    let n: i64 = e
        .sql
        .query_one(
            "SELECT count(*) FROM ps_endpoints WHERE direct_media IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

/// Eight layers of seven groups, each holding every group of the next layer (legal in GURU3:
/// no loops, depth 8), the last layer holding users: every user gets its shortest cumulative
/// delay, paused members never ring. Enumerating paths instead (7^7 of them per top group)
/// ran past the operation timeout.
#[tokio::test]
async fn a_dense_nested_hierarchy_routes_every_user_at_its_shortest_delay() {
    let e = env().await;
    let group = |layer: usize, i: usize| ext(&format!("{}", 3000 + layer * 10 + i));
    let mut changes = Vec::new();
    for layer in 0..8 {
        for i in 0..7 {
            changes.push(Change::UpsertGroup {
                extension: group(layer, i),
                name: format!("L{layer}G{i}"),
                short_name: String::new(),
            });
        }
    }
    for j in 0..7 {
        for k in 0..3 {
            let n = format!("{}", 4000 + j * 10 + k);
            changes.push(Change::UpsertUser(sip(&n, "Member", "Secret123")));
        }
    }
    // bottom-up, as a resync's member pass sends them
    for layer in (0..8).rev() {
        for i in 0..7 {
            let members = if layer == 7 {
                let u = |k: usize| format!("{}", 4000 + i * 10 + k);
                vec![m(&u(0), true, 1), m(&u(1), true, 2), m(&u(2), false, 0)]
            } else {
                (0..7)
                    .map(|j| m(group(layer + 1, j).as_str(), true, j as i32))
                    .collect()
            };
            changes.push(Change::SetMembers {
                extension: group(layer, i),
                name: format!("L{layer}G{i}"),
                members,
            });
        }
    }
    for r in e.store.apply(&changes).await.unwrap() {
        r.unwrap();
    }
    // from the top: index 0 down to layer 6 (no delay), then group j of layer 7 (j s), then
    // its users (1 s and 2 s); the paused third user is left out
    let mut want: Vec<(usize, String)> = (0..7)
        .flat_map(|j| {
            [
                (j + 1, format!("{}", 4000 + j * 10)),
                (j + 2, format!("{}", 4001 + j * 10)),
            ]
        })
        .collect();
    want.sort();
    let want: Vec<String> = want
        .iter()
        .map(|(d, n)| format!("Local/{d}-{n}@hexidian-cg-leg"))
        .collect();
    let route = e.store.routes(Some(&group(0, 0))).await.unwrap();
    assert_eq!(dial(&route), want.join("&"));
    // a group of the last layer rings its own users only
    let route = e.store.routes(Some(&group(7, 3))).await.unwrap();
    assert_eq!(
        dial(&route),
        "Local/1-4030@hexidian-cg-leg&Local/2-4031@hexidian-cg-leg"
    );
    // an edit deep down reaches the top: pausing 4000 leaves 4001 of group 0
    e.store
        .apply(&[Change::SetMembers {
            extension: group(7, 0),
            name: "L7G0".into(),
            members: vec![m("4000", false, 1), m("4001", true, 2), m("4002", false, 0)],
        }])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let route = e.store.routes(Some(&group(0, 6))).await.unwrap();
    assert!(
        dial(&route).starts_with("Local/2-4001@hexidian-cg-leg&Local/2-4010@hexidian-cg-leg&"),
        "{}",
        dial(&route)
    );
    assert!(!dial(&route).contains("-4000@"), "{}", dial(&route));
}
