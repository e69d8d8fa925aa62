//! What the store takes and gives: user specs, changes, outcomes, listed users and routes.

use crate::types::{Extension, Kind, Routing, SipPassword};

/// What a user upsert should write.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// The extension (also every `ps_*` id).
    pub extension: Extension,
    /// SIP, DECT or temporary.
    pub kind: Kind,
    /// Display name from GURU3 (sanitised here).
    pub name: String,
    /// For SIP: the password from GURU3 (required). For DECT/temporary: `None` keeps the
    /// stored password (a new one is generated for new users); `Some` replaces it.
    pub password: Option<SipPassword>,
    /// Use the premium endpoint template ([`Config::premium_template`](super::Config::premium_template); the regular one if
    /// none is configured).
    pub premium: bool,
    /// How the dialplan routes calls to this user (`hexidian.route`).
    pub routing: Routing,
}

/// A call-group member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Member number.
    pub extension: Extension,
    /// `false` = paused: kept but not rung.
    pub active: bool,
    /// Seconds after the call starts (clamped to 0–600).
    pub delay_s: i32,
}

/// One unit of work; a batch applies several in one transaction.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Change {
    /// Create or update a user (AOR, auth, endpoint, ownership mark).
    UpsertUser(UserSpec),
    /// Delete a user hexidian owns (no-op otherwise).
    DeleteUser(Extension),
    /// Rename a user and every call-group reference to it.
    Rename {
        /// Old number.
        old: Extension,
        /// New number.
        new: Extension,
    },
    /// Change the password of an owned user.
    SetPassword(Extension, SipPassword),
    /// Change the display name (and caller ID) of an owned user.
    SetDisplayName(Extension, String),
    /// A GROUP extension (UPDATE_EXTENSION type GROUP).
    UpsertGroup {
        /// Number.
        extension: Extension,
        /// Name.
        name: String,
        /// Up to 3 characters shown before the caller name (sanitised to A-Z a-z 0-9).
        short_name: String,
    },
    /// The complete member list of a group or multiring extension (UPDATE_CALLGROUP).
    SetMembers {
        /// Number.
        extension: Extension,
        /// Name.
        name: String,
        /// Members; duplicates keep the last, the extension itself is dropped.
        members: Vec<Member>,
    },
    /// The extension is no longer a GROUP (UPDATE_EXTENSION of another type).
    NotGroup {
        /// Number.
        extension: Extension,
        /// Name.
        name: String,
    },
    /// Remove the extension everywhere: its user, its group and its memberships.
    DeleteExtension(Extension),
}

impl Change {
    /// What applying it does, for error reports (`renaming 2020 to 2021`); never a secret.
    pub fn describe(&self) -> String {
        match self {
            Self::UpsertUser(s) => format!("writing user {}", s.extension),
            Self::DeleteUser(e) => format!("deleting user {e}"),
            Self::Rename { old, new } => format!("renaming {old} to {new}"),
            Self::SetPassword(e, _) => format!("setting the password of {e}"),
            Self::SetDisplayName(e, _) => format!("setting the name of {e}"),
            Self::UpsertGroup { extension, .. } => format!("writing group {extension}"),
            Self::SetMembers { extension, .. } => format!("setting the members of {extension}"),
            Self::NotGroup { extension, .. } => format!("turning group {extension} into a user"),
            Self::DeleteExtension(e) => format!("deleting {e}"),
        }
    }
}

/// Result of one change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A user was written; the effective password (push it to the OMM for DECT users).
    User {
        /// Password now stored in `ps_auths`.
        password: SipPassword,
        /// The id was new.
        created: bool,
    },
    /// Whether something was changed or deleted.
    Done(bool),
}

/// An owned user as stored, with drift indicators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedUser {
    /// The extension.
    pub extension: String,
    /// Kind (`None` if the stored kind is unknown).
    pub kind: Option<Kind>,
    /// Sanitised display name.
    pub display_name: String,
    /// Sync epoch of the last upsert.
    pub seen_epoch: i64,
    /// `ps_endpoints` row present.
    pub has_endpoint: bool,
    /// `ps_aors` row present.
    pub has_aor: bool,
    /// `ps_auths` row present.
    pub has_auth: bool,
    /// Endpoint context.
    pub context: Option<String>,
    /// Endpoint caller ID.
    pub callerid: Option<String>,
    /// `auth` and `aors` point at the id itself.
    pub links_ok: bool,
    /// Stored password.
    pub password: Option<SipPassword>,
}

impl ManagedUser {
    /// Whether all three rows exist and point at each other.
    pub fn is_complete(&self) -> bool {
        self.has_endpoint && self.has_aor && self.has_auth && self.links_ok
    }
}

/// A flattened call-group route as the dialplan reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Group number.
    pub id: String,
    /// Name.
    pub name: String,
    /// Short name.
    pub short_name: String,
    /// `Local/<delay>-<target>@hexidian-cg-leg` joined by `&`; empty = nobody to ring.
    pub dialstring: String,
}

/// What a completed resync removed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// The epoch that ended.
    pub epoch: i64,
    /// Users deleted from all three tables.
    pub users: Vec<String>,
    /// Call groups deleted.
    pub groups: Vec<String>,
}
