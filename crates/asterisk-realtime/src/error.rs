//! Errors.

use std::fmt;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database rejected a statement or the connection failed.
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
    /// No connection right now (reconnecting); retry later.
    #[error("database unavailable (reconnecting)")]
    Unavailable,
    /// The id belongs to rows hexidian does not own.
    #[error("extension {extension} has rows in {table} that hexidian does not own")]
    Conflict {
        /// The extension.
        extension: String,
        /// First table with a foreign row.
        table: &'static str,
    },
    /// A value from outside cannot be stored.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// A resync would delete more than the configured share of users.
    #[error("sweep refused: {stale} of {total} users were not seen in sync epoch {epoch}")]
    SweepRefused {
        /// Users that would be deleted.
        stale: i64,
        /// Users in total (temporary users excluded).
        total: i64,
        /// The sync epoch.
        epoch: i64,
    },
    /// The database schema is not what this crate expects.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The OS random number generator failed.
    #[error("os random number generator failed")]
    Random,
    /// A call did not finish in time.
    #[error("timed out")]
    Timeout,
}

impl Error {
    /// The SQLSTATE code of a database error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.code().map(tokio_postgres::error::SqlState::code),
            _ => None,
        }
    }

    /// The server's error report (message, detail, constraint…), if any.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            Self::Db(e) => e.as_db_error(),
            _ => None,
        }
    }

    /// Whether the same work may succeed when retried (connection loss, serialization failure,
    /// deadlock, lock or statement timeout, too many connections).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable | Self::Timeout => true,
            Self::Db(e) => match e.code().map(tokio_postgres::error::SqlState::code) {
                Some(c) => {
                    c.starts_with("08")
                        || matches!(
                            c,
                            "57P01"
                                | "57P02"
                                | "57P03"
                                | "57014"
                                | "40001"
                                | "40P01"
                                | "55P03"
                                | "53300"
                        )
                }
                // no SQLSTATE: the connection itself failed
                None => true,
            },
            _ => false,
        }
    }

    /// Whether another writer already owns the object.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. }) || self.code() == Some("23505")
    }
}

/// A value that cannot be stored: names the field and why (never echoes secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidInput {
    field: &'static str,
    value: Option<String>,
    reason: &'static str,
}

impl InvalidInput {
    pub(crate) fn new(field: &'static str, value: &str, reason: &'static str) -> Self {
        let shown: String = value
            .chars()
            .take(40)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Self {
            field,
            value: Some(shown),
            reason,
        }
    }

    pub(crate) fn redacted(field: &'static str, reason: &'static str) -> Self {
        Self {
            field,
            value: None,
            reason,
        }
    }

    /// The field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "invalid {} {v:?}: {}", self.field, self.reason),
            None => write!(f, "invalid {}: {}", self.field, self.reason),
        }
    }
}
