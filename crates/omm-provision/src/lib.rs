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
pub use link::{Event, Link, WriteGate};
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

    /// Whose an OMM user is, by its `hierarchy1` and `hierarchy2`.
    pub fn owner_of(&self, hierarchy1: Option<&str>, hierarchy2: Option<&str>) -> Owner {
        match (
            hierarchy1 == Some(self.owner.as_str()),
            hierarchy2 == Some(self.temp.as_str()),
        ) {
            (true, true) => Owner::Temporary,
            (true, false) => Owner::Owned,
            (false, _) => Owner::Foreign,
        }
    }
}

/// An OMM user as provisioning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    /// The OMM's id.
    pub uid: u32,
    /// `num` (empty if it has none).
    pub number: String,
    /// Display name.
    pub name: String,
    /// Whose it is.
    pub owner: Owner,
    /// The IPEI of its bound handset.
    pub ipei: Option<omm_axi::Ipei>,
}

/// Whose an OMM user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Created by this broker for an extension: it keeps it in line with the extension.
    Owned,
    /// This broker's temporary user of a handset without one of its own.
    Temporary,
    /// Someone else's: never changed or deleted.
    Foreign,
}

impl Owner {
    /// Label for lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owned => "owned",
            Self::Temporary => "temporary",
            Self::Foreign => "foreign",
        }
    }
}
