#![no_main]
//! Feeds arbitrary bodies (with and without the JSON content type) to the token-call
//! webhook's request parser: nothing may panic, and an accepted call has digits only.

use libfuzzer_sys::fuzz_target;
use unbound_handsets::webhook::TokenCall;

fuzz_target!(|data: &[u8]| {
    let ct = match data.first() {
        Some(b) if b % 3 == 0 => None,
        Some(b) if b % 3 == 1 => Some("text/plain"),
        _ => Some("application/json; charset=utf-8"),
    };
    if let Ok(call) = TokenCall::parse(ct, data) {
        assert!(call.token.bytes().all(|b| b.is_ascii_digit()), "{:?}", call.token.len());
        assert!(call.caller.as_str().bytes().all(|b| b.is_ascii_digit()));
    }
});
