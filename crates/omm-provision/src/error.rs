//! What a provisioning step can fail with.

/// A provisioning step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No session is open (the link is reconnecting).
    #[error("omm link is down")]
    Down,
    /// The OMM refused or did not answer a request.
    #[error("omm: {0}")]
    Omm(#[from] omm_axi::Error),
    /// The number belongs to an OMM user this broker does not own.
    #[error("omm user {number} exists but is not this broker's (its hierarchy1 is not {owner:?})")]
    NotOwned {
        /// The number.
        number: String,
        /// The owner tag this broker writes (`hierarchy1`).
        owner: String,
    },
    /// No (owned) user has the number.
    #[error("no omm user {0}")]
    NoUser(String),
    /// The user to bind a handset to is missing.
    #[error("no omm user {0} to bind to")]
    NoTarget(String),
    /// No device has this id.
    #[error("no handset {0}")]
    NoHandset(u32),
    /// The handset is attached to a user this broker does not own.
    #[error(
        "handset {ipei} is attached to OMM user {holder} (uid {uid}), which this broker does \
         not own ({owner:?}): detach it in the OMM first"
    )]
    ForeignHolder {
        /// The handset.
        ipei: String,
        /// Its user's number (`?` if it has none).
        holder: String,
        /// Its user's id.
        uid: u32,
        /// The owner tag this broker writes.
        owner: String,
    },
    /// The IPEI is not valid.
    #[error("invalid ipei {ipei:?}: {reason}")]
    InvalidIpei {
        /// As given.
        ipei: String,
        /// Why.
        reason: String,
    },
    /// The handset disappeared while it was being bound; a retry finds out what is left.
    #[error("handset {0} vanished; retrying")]
    Vanished(String),
    /// The number is taken by another user.
    #[error("omm number {0} is taken")]
    Taken(String),
    /// The write gate is closed: this process may not write to the OMM now (another instance
    /// of the broker is the active one).
    #[error("not the active instance: the OMM is not written")]
    NotActive,
}

impl Error {
    /// The OMM's error, when it is one.
    pub fn omm(&self) -> Option<&omm_axi::Error> {
        match self {
            Self::Omm(e) => Some(e),
            _ => None,
        }
    }
}

/// A provisioning result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
