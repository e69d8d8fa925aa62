#![no_main]
//! Feeds arbitrary bytes through the OM AXI framing, decoder and session: nothing may panic,
//! and the frames must not depend on how the input is chunked.

use libfuzzer_sys::fuzz_target;
use omm_axi::proto::{FrameBuffer, Message, Session};

fuzz_target!(|data: &[u8]| {
    // whole input at once vs. a split at a data-dependent point
    let split = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let mut whole = FrameBuffer::new(64 * 1024);
    whole.push(data);
    let mut parts = FrameBuffer::new(64 * 1024);
    parts.push(&data[..split]);
    let mut a = Vec::new();
    while let Some(f) = parts.pop() {
        a.push(f);
    }
    parts.push(&data[split..]);
    while let Some(f) = parts.pop() {
        a.push(f);
    }
    let mut b = Vec::new();
    while let Some(f) = whole.pop() {
        b.push(f);
    }
    assert_eq!(a, b);
    for frame in b.into_iter().flatten() {
        let _ = Message::decode(&frame);
    }
    // a single document without NUL, as the decoder sees it
    let _ = Message::decode(data);
    let mut session: Session<()> = Session::new(64 * 1024);
    session.receive(data);
    session.receive(&[0]);
    while session.poll_output().is_some() {}
});
