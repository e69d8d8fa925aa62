use omm_axi::proto::{Element, FrameBuffer, PpUser, Session};
use omm_axi::{Ipei, Ppn, Uid};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9]{0,8}"
}

fn element(depth: u32) -> BoxedStrategy<Element> {
    let leaf = (
        name(),
        proptest::collection::vec((name(), any::<String>()), 0..5),
    )
        .prop_map(|(n, attrs)| {
            attrs
                .into_iter()
                .fold(Element::new(n), |e, (k, v)| e.with_attr(k, v))
        });
    if depth == 0 {
        return leaf.boxed();
    }
    (leaf, proptest::collection::vec(element(depth - 1), 0..3))
        .prop_map(|(e, children)| children.into_iter().fold(e, Element::with_child))
        .boxed()
}

/// What the writer promises: characters XML cannot carry become `?`.
fn sanitised(e: &Element) -> Element {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
                    || c == '\u{FFFE}'
                    || c == '\u{FFFF}'
                {
                    '?'
                } else {
                    c
                }
            })
            .collect()
    };
    let mut out = Element::new(e.name());
    for (k, v) in e.attributes() {
        out.set_attr(k.clone(), clean(v));
    }
    for c in e.children() {
        out.push_child(sanitised(c));
    }
    out
}

proptest! {
    #[test]
    fn element_encode_decode_round_trip(e in element(2)) {
        let bytes = e.encode();
        prop_assert_eq!(bytes.iter().filter(|b| **b == 0).count(), 1);
        let back = Element::decode(&bytes[..bytes.len() - 1]).unwrap();
        prop_assert_eq!(back, sanitised(&e));
    }

    #[test]
    fn user_record_round_trip(attrs in proptest::collection::btree_map(
        prop_oneof![Just("name".to_owned()), Just("num".to_owned()), Just("vip".to_owned()), Just("forwardTime".to_owned()), Just("relType".to_owned()), name()],
        "[ -~]{0,12}", 0..8)) {
        let e = attrs.iter().fold(Element::new("user"), |e, (k, v)| e.with_attr(k.clone(), v.clone()));
        let user = PpUser::from_element(&e).unwrap();
        let again = PpUser::from_element(&user.to_element("user", None).unwrap()).unwrap();
        prop_assert_eq!(user, again);
    }

    #[test]
    fn ids_round_trip(raw in any::<u32>()) {
        prop_assert_eq!(Uid::new(raw).to_string().parse::<Uid>().unwrap(), Uid::new(raw));
        prop_assert_eq!(Ppn::new(raw).to_string().parse::<Ppn>().unwrap(), Ppn::new(raw));
    }

    #[test]
    fn ipei_round_trips(emc in any::<u16>(), psn in 0u32..=0xFFFFF) {
        let ipei = Ipei::new(emc, psn).unwrap();
        prop_assert_eq!(ipei.to_string().parse::<Ipei>().unwrap(), ipei);
        prop_assert_eq!(ipei.to_hex().parse::<Ipei>().unwrap(), ipei);
        prop_assert!(ipei.is_check_valid());
    }

    #[test]
    fn ipei_parser_never_panics(s in "\\PC{0,20}") {
        let _ = s.parse::<Ipei>();
        let _ = Ipei::parse_lenient(&s);
    }

    #[test]
    fn framing_is_independent_of_chunking(docs in proptest::collection::vec(element(1), 1..6), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let stream: Vec<u8> = docs.iter().flat_map(Element::encode).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut fb = FrameBuffer::default();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            fb.push(&stream[last..p]);
            last = p;
            while let Some(f) = fb.pop() {
                got.push(f.unwrap());
            }
        }
        let expected: Vec<Vec<u8>> = docs.iter().map(|d| { let b = d.encode(); b[..b.len() - 1].to_vec() }).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn session_never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let mut s: Session<()> = Session::new(256);
        for c in &chunks {
            s.receive(c);
            while s.poll_output().is_some() {}
        }
    }

    #[test]
    fn session_never_panics_on_near_valid_xml(body in "<[A-Za-z]{1,6}(Resp|Event)?( [a-z]{1,4}=\"[^\"\\x00]{0,6}\"){0,3}(/>|>)[^\\x00]{0,10}") {
        let mut s: Session<()> = Session::default();
        s.receive(body.as_bytes());
        s.receive(&[0]);
        while s.poll_output().is_some() {}
    }
}
