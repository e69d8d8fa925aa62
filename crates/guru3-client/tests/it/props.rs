//! Decoding never panics, whatever GURU3 (or something in front of it) sends.

use guru3_client::Page;
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        "[0-9]{0,6}".prop_map(Value::String),
        Just(Value::String("x".repeat(300))),
        Just(Value::String("a\0b".into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("number".to_owned()),
                    Just("type".to_owned()),
                    Just("password".to_owned()),
                    Just("token".to_owned()),
                    Just("dect".to_owned()),
                    Just("extensions".to_owned()),
                    Just("extension".to_owned()),
                    Just("forward_extension".to_owned()),
                    Just("ipei".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("UPDATE_EXTENSION".to_owned()),
        Just("DELETE_EXTENSION".to_owned()),
        Just("RENAME_EXTENSION".to_owned()),
        Just("UPDATE_CALLGROUP".to_owned()),
        Just("UNSUBSCRIBE_DEVICE".to_owned()),
        Just("CALL_EXTENSION".to_owned()),
        Just("SYNC_STARTED".to_owned()),
        "[A-Z_]{0,20}",
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_envelopes_never_panics(id in any::<i64>(), kind in kind(), data in json_value()) {
        let body = json!([{"id": id, "timestamp": 1.5, "type": kind, "data": data}]).to_string();
        let page = Page::from_json(body.as_bytes()).unwrap();
        for m in &page.messages {
            let _ = m.decode();
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(page) = Page::from_json(&body) {
            for m in &page.messages {
                let _ = m.decode();
            }
        }
    }
}
