//! Every fixture decodes; the decoded form is snapshotted (reviewed by hand).

use guru3_client::inbound::decode_post_response;
use guru3_client::{Message, Page, RawMessage};

use crate::fixtures_dir;

/// The decoded form of one envelope, or the error as text.
fn decoded(raw: &RawMessage) -> String {
    match raw.decode() {
        Ok(m) => format!("{} {}: {m:#?}", raw.id, raw.kind),
        Err(e) => {
            let mut s = format!("{} {}: ERROR {e}", raw.id, raw.kind);
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

#[test]
fn every_fixture_decodes() {
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "fixtures missing: {files:?}");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&path).unwrap();
        let text = if name.starts_with("post-") && name.ends_with("-response") {
            format!("{:#?}", decode_post_response(&body).unwrap())
        } else if name.starts_with("post-") || name.starts_with("ws-") {
            continue; // request descriptions and frames: exercised against the sim
        } else if name.starts_with("get-messages") {
            let page = Page::from_json(&body).unwrap();
            let mut out: Vec<String> = page.messages.iter().map(decoded).collect();
            for m in &page.malformed {
                out.push(format!("not an envelope: {m}"));
            }
            out.join("\n")
        } else {
            let page =
                Page::from_json(format!("[{}]", String::from_utf8(body).unwrap()).as_bytes())
                    .unwrap();
            assert_eq!(page.messages.len(), 1, "{name}");
            decoded(&page.messages[0])
        };
        insta::assert_snapshot!(format!("fixture-{name}"), text);
    }
}

#[test]
fn secrets_never_show_in_debug_of_decoded_fixtures() {
    let body = std::fs::read(fixtures_dir().join("get-messages-mixed-batch.json")).unwrap();
    let page = Page::from_json(&body).unwrap();
    let all: String = page
        .messages
        .iter()
        .map(|m| format!("{:?}", m.decode().unwrap()))
        .collect();
    for secret in ["e1vdxzqL", "FA05689957F199E95B1FE44621BFD6EE", "05704191"] {
        assert!(!all.contains(secret), "{secret} leaked into Debug output");
    }
}

#[test]
fn the_mixed_batch_keeps_server_order_and_every_type() {
    let body = std::fs::read(fixtures_dir().join("get-messages-mixed-batch.json")).unwrap();
    let page = Page::from_json(&body).unwrap();
    let kinds: Vec<String> = page
        .messages
        .iter()
        .map(|m| match m.decode().unwrap() {
            Message::UpdateExtension(u) => format!("U{}", u.number),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("SYNC_STARTED"));
    assert!(kinds.contains(&"SYNC_ENDED".to_owned()));
    assert_eq!(kinds.iter().filter(|k| *k == "U2001").count(), 3);
    assert!(kinds.contains(&"RENAME_EXTENSION 2002→2020".to_owned()));
    assert!(kinds.contains(&"CALL_EXTENSION 2001".to_owned()));
}
