//! Errors.

use std::fmt;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database rejected a statement or the connection failed.
    #[error(transparent)]
    Db(#[from] PgError),
    /// A database error and what hexidian was doing when it happened.
    #[error("{source} while {doing}")]
    Context {
        /// What hexidian was doing ("removing contacts of 2020").
        doing: String,
        /// The error.
        source: Box<Self>,
    },
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
    /// The write was refused: another instance became active since this one's epoch.
    #[error(
        "fenced: this instance's epoch {held} is no longer the current one ({current}); another hexidian is active"
    )]
    Fenced {
        /// The epoch this process holds.
        held: i64,
        /// The current one.
        current: i64,
    },
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(PgError(e))
    }
}

/// An error of the PostgreSQL client. Shown as the server's message and SQLSTATE
/// (`permission denied for table ps_contacts (42501)`), or as the client's failure
/// (`error connecting to server: …`). The server's DETAIL is left out: it may quote the
/// values of a row, passwords included; [`Error::as_db_error`] has it.
#[derive(Debug)]
pub struct PgError(tokio_postgres::Error);

impl PgError {
    /// The client's error.
    pub fn inner(&self) -> &tokio_postgres::Error {
        &self.0
    }
}

impl PgError {
    /// The client could not encode a parameter or decode a row (a type or column mismatch):
    /// the same statement with the same values fails again. tokio-postgres has no public
    /// error kind, so its fixed descriptions tell.
    fn is_codec_error(&self) -> bool {
        if self.0.as_db_error().is_some() || self.0.is_closed() {
            return false;
        }
        let text = self.0.to_string();
        [
            "error serializing parameter",
            "error deserializing column",
            "invalid column",
            "query returned an unexpected number of",
            "expected ",
            "error encoding message",
        ]
        .iter()
        .any(|p| text.starts_with(p))
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
            None => self.0.fmt(f),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.0.as_db_error() {
            // the message is already shown; the rest of the report may hold row values
            Some(_) => None,
            None => std::error::Error::source(&self.0),
        }
    }
}

/// Adds what hexidian was doing to a database error: `.doing(|| format!("deleting {id}"))`.
pub trait Doing<T> {
    /// Wraps a database error with `what` (computed only on error); other errors pass.
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Doing<T> for std::result::Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e.into() {
            // the innermost context is the most precise
            e @ Error::Context { .. } => e,
            e @ Error::Db(_) => Error::Context {
                doing: what(),
                source: Box::new(e),
            },
            e => e,
        })
    }
}

impl Error {
    /// The error without the context hexidian added.
    pub fn root(&self) -> &Self {
        match self {
            Self::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// What hexidian was doing when the error happened, if it said so.
    pub fn doing(&self) -> Option<&str> {
        match self {
            Self::Context { doing, .. } => Some(doing),
            _ => None,
        }
    }

    /// The SQLSTATE code of a database error.
    pub fn code(&self) -> Option<&str> {
        match self.root() {
            Self::Db(e) => e.0.code().map(tokio_postgres::error::SqlState::code),
            _ => None,
        }
    }

    /// The server's error report (message, detail, constraint…), if any.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self.root() {
            Self::Db(e) => e.0.as_db_error(),
            _ => None,
        }
    }

    /// Whether the database refuses hexidian itself rather than the data: a privilege is
    /// missing (42501), or an object its statements need does not exist (undefined table,
    /// column, function, schema or object: 42P01, 42703, 42883, 3F000, 42704), or its role
    /// may not log in (28000, 28P01). Retrying the same message will not help, and neither
    /// will dropping it: the set-up has to be fixed.
    pub fn is_setup_fault(&self) -> bool {
        matches!(
            self.code(),
            Some("42501" | "42P01" | "42703" | "42883" | "3F000" | "42704" | "28000" | "28P01")
        )
    }

    /// Whether the same work may succeed when retried (connection loss, serialization failure,
    /// deadlock, lock or statement timeout, too many connections).
    pub fn is_transient(&self) -> bool {
        match self.root() {
            // a fenced instance steps down; its messages are the new active's
            Self::Unavailable | Self::Timeout | Self::Fenced { .. } => true,
            Self::Db(e) => match e.0.code().map(tokio_postgres::error::SqlState::code) {
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
                // no SQLSTATE: the connection failed, unless the client could not encode a
                // value or decode a row, which fails the same way every time
                None => !e.is_codec_error(),
            },
            _ => false,
        }
    }

    /// Whether another writer already owns the object.
    pub fn is_conflict(&self) -> bool {
        matches!(self.root(), Self::Conflict { .. }) || self.code() == Some("23505")
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
