use std::path::PathBuf;

use omm_axi::proto::Message;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/omm-axi")
}

/// Every fixture decodes; the decoded form is snapshotted (one snapshot per file).
#[test]
fn every_fixture_decodes() {
    let mut names: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "fixtures missing: {names:?}");
    for name in names {
        let bytes = std::fs::read(dir().join(&name)).unwrap();
        let msg = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rendered = match &msg {
            Message::Response(r) => {
                let mut out = format!(
                    "{:#?}\nusers: {:#?}\ndevices: {:#?}",
                    r.error(),
                    r.users(),
                    r.devices()
                );
                if r.name() == "OpenResp" {
                    out.push_str(&format!("\nkey: {:?}", r.public_key().map(|k| k.bits())));
                }
                if r.name() == "GetLastPPDevActionResp" {
                    let pp = r.body().child("pp").unwrap();
                    out.push_str(&format!(
                        "\nlast action: {:#?}",
                        omm_axi::LastPpAction::from_element(pp)
                    ));
                }
                if r.name() == "GetPPStateResp" {
                    out.push_str(&format!("\nstate: {:#?}", r.pp_state()));
                }
                out
            }
            Message::Event(e) => format!("{e:#?}"),
            other => format!("{other:#?}"),
        };
        insta::assert_snapshot!(
            format!("fixture-{}", name.trim_end_matches(".xml")),
            rendered
        );
    }
}

#[test]
fn secrets_never_show_in_debug_of_decoded_fixtures() {
    let bytes = std::fs::read(dir().join("create-pp-user-resp.xml")).unwrap();
    let Message::Response(r) = Message::decode(&bytes).unwrap() else {
        panic!()
    };
    let dbg = format!("{:?}", r.users().unwrap());
    assert!(!dbg.contains("Tz8A") && !dbg.contains("bUwy"), "{dbg}");
}
