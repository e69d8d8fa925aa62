use omm_axi::proto::{PpDevice, PpUser, Request};
use omm_axi::{Ipei, Ppn, RelType, Secret, SecretValue, Subscription, SubscriptionMode, Uid};

fn text(r: &Request, seq: u32) -> String {
    let bytes = r.encode(Some(seq), None).unwrap();
    assert_eq!(bytes.last(), Some(&0), "frame ends with NUL");
    String::from_utf8(bytes[..bytes.len() - 1].to_vec()).unwrap()
}

/// The encoded form of every request the client sends (seq fixed at 7).
#[test]
fn encoded_requests() {
    let mut user = PpUser::default();
    user.name = Some("Bühnentechnik \"Stage\" <Patch>; Rack 3\n&'".into());
    user.num = Some("4711".into());
    user.hierarchy1 = Some("HEXIDIAN".into());
    let mut set = PpUser::default();
    set.uid = Some(Uid::new(3));
    set.name = Some("Alice Example".into());
    set.vip = Some(true);
    let mut dev = PpDevice::default();
    dev.ipei = Some("03074 0220259 3".parse::<Ipei>().unwrap());
    dev.encrypt = Some(true);
    let cases = vec![
        Request::open("omm", &Secret::new("s3cret"), true, None),
        Request::open("omm", &Secret::new("s3cret"), false, Some(45)),
        Request::ping(Some(1_732_270_100)),
        Request::get_versions(),
        Request::limits(),
        Request::get_system_name(),
        Request::subscribe(&Subscription::provisioning()).unwrap(),
        Request::get_pp_user(Uid::new(0), Some(20)),
        Request::get_pp_user(Uid::new(5), Some(99)),
        Request::get_pp_user_by_number("0815"),
        Request::create_pp_user(user),
        Request::set_pp_user(set),
        Request::delete_pp_user(Uid::new(3)),
        Request::set_pp_user_dev_relation(Uid::new(3), &RelType::Fixed),
        Request::get_pp_dev(Ppn::new(13), Some(20)),
        Request::get_pp_dev_by_ipei("00C0235C63".parse().unwrap()),
        Request::create_pp_dev(&dev).unwrap(),
        Request::delete_pp_dev(Ppn::new(12)),
        Request::attach(Ppn::new(12), Uid::new(3), &RelType::Dynamic),
        Request::detach(Ppn::new(12), Uid::new(3)),
        Request::get_dect_subscription_mode(),
        Request::set_dect_subscription_mode(&SubscriptionMode::Wildcard, Some(2)),
        Request::set_dect_subscription_mode(&SubscriptionMode::Configured, Some(2)),
        Request::set_dev_auto_create(true),
        Request::get_pp_state(Ppn::new(12)),
        Request::get_last_pp_dev_action(Ppn::new(12)),
    ];
    let all: Vec<String> = cases.iter().map(|r| text(r, 7)).collect();
    insta::assert_snapshot!("encoded-requests", all.join("\n"));
}

#[test]
fn subscribe_rejects_empty_and_oversized_lists() {
    assert!(Request::subscribe(&[]).is_err());
    let many: Vec<_> = (0..21).map(|i| Subscription::on(format!("T{i}"))).collect();
    assert!(Request::subscribe(&many).is_err());
}

#[test]
fn plaintext_secrets_are_encrypted_at_encode_time() {
    let key_hex = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/omm-axi/sim-rsa512.hex"
    ))
    .unwrap();
    let get = |p: &str| {
        key_hex
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap()
            .to_owned()
    };
    let key = omm_axi::PublicKey::from_hex(&get("n="), &get("e=")).unwrap();
    let mut user = PpUser::default();
    user.pin = Some(SecretValue::Plain(Secret::new("1234")));
    let r = Request::create_pp_user(user.clone());
    let bytes = r.encode(Some(1), Some(&key)).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains("1234"));
    assert!(text.contains("pin=\""));
    // without a key the request cannot be encoded
    assert!(Request::create_pp_user(user).encode(Some(1), None).is_err());
    // the 53-byte limit of the 512-bit key
    let mut long = PpUser::default();
    long.sip_pw = Some(SecretValue::Plain(Secret::new("x".repeat(54))));
    let err = Request::create_pp_user(long)
        .encode(Some(1), Some(&key))
        .unwrap_err();
    assert_eq!(err.to_string(), "secret field `sipPw` cannot be sent");
}
