#![no_main]
//! Feeds arbitrary bytes through GURU3's page decoder and every message decoder: nothing may
//! panic, and every decoded page element has a usable id.

use guru3_client::Page;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = Page::from_json(data) {
        for m in &page.messages {
            assert!(m.id.get() > 0);
            let _ = m.decode();
        }
    }
});
