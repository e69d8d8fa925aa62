//! DECT provisioning on a Mitel OMM over [`omm_axi`]: users of extensions, their handsets,
//! temporary users of handsets without one, all marked as this broker's and only those ever
//! changed or deleted.
//!
//! [`Link::maintain`] keeps one session open. After every (re)connect it reads the OMM's
//! users and devices once (pipelined pages) into a compact map, which its own writes and the
//! OMM's `…Cnf` events keep current; provisioning asks the map first, so a re-check of an
//! unchanged user or handset costs no request and a new user one. Changes hold the keys of
//! the numbers and the handset they touch, so two changes of one user or one handset never
//! interleave while others run at once.
//!
//! The map trusts that the OMM announces a change before it answers requests sent after
//! that change (the simulator does; the specification leaves the order of events and
//! responses open). A map found wrong by the OMM's refusal (`EExist`, `ENoEnt`) is corrected
//! by asking the OMM; every reconnect reads it afresh.

mod error;
mod handsets;
mod keys;
mod link;
mod map;
mod users;

pub use error::{Error, Result};
pub use handsets::{Device, TempUser};
pub use link::{Event, Link};
pub use users::{HandsetSpec, UserSpec};

/// The marks of this broker's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    /// `hierarchy1` of every user the broker creates: users without it are never touched.
    pub owner: String,
    /// `hierarchy2` of temporary users (handsets without a user of their own).
    pub temp: String,
}

impl Tags {
    /// Owner and temporary marks.
    pub fn new(owner: impl Into<String>, temp: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            temp: temp.into(),
        }
    }
}
