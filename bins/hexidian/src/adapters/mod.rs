//! The only code that knows both sides: each adapter implements a `broker_core` port over a
//! protocol crate, mapping types and errors and nothing more.

mod guru3;
mod omm;
mod pg;

pub use guru3::Guru3Feed;
pub use omm::{OWNER_TAG, OmmDect, OmmHandsets, OmmLink, OmmStats, TEMP_TAG, omm_link};
pub use pg::{PgSip, PgState};
pub(crate) use {
    guru3::{decode_messages, restore},
    pg::mirror_entries,
};
