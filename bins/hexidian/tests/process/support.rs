//! What the process tests share: the binary under test; the config and the child process
//! live in `hexidian_e2e::process` (the `scale` benchmark runs hexidian the same way).

pub(crate) use hexidian_e2e::process::{Hexidian, OMM_PASSWORD, WEBHOOK_KEY, write_config};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hexidian");
