//! Errors.

use crate::message::DecodeError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to GURU3.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket or TLS error (connect, handshake, read, write).
    #[error("i/o error talking to guru3")]
    Io(#[from] std::io::Error),
    /// HTTP framing error.
    #[cfg(feature = "client")]
    #[error("http error")]
    Http(#[source] hyper::Error),
    /// Websocket error (handshake refused, protocol violation, closed).
    #[cfg(feature = "client")]
    #[error("websocket error")]
    Websocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// GURU3 answered with a status other than 200.
    #[error("guru3 answered {request} with http {status}")]
    Rejected {
        /// Which request (`GET messages`, `POST acks`, …).
        request: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The beginning of the body (GURU3 sends HTML error pages), at most 200 characters.
        body: String,
    },
    /// A 200 answer whose body could not be understood.
    #[error("guru3 sent an unexpected body")]
    Protocol(#[from] DecodeError),
    /// The answer exceeded the configured size limit.
    #[error("guru3 response larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// No answer within the configured timeout.
    #[error("{request} timed out")]
    Timeout {
        /// Which request.
        request: &'static str,
    },
    /// The peer closed the connection before answering.
    #[error("connection closed")]
    Closed,
    /// Invalid configuration or argument.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status GURU3 answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying later may succeed: network trouble, timeouts and 5xx answers.
    /// 400/403/404/405 are configuration or programming errors and are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) | Self::Timeout { .. } | Self::Closed => true,
            #[cfg(feature = "client")]
            Self::Http(_) | Self::Websocket(_) => true,
            Self::Rejected { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether nothing answered for GURU3: the connection was refused (GURU3 restarting), or
    /// a proxy in front of it said its backend is down (502, 503). Such a try costs GURU3
    /// nothing, so callers retry within a second instead of backing off for long.
    pub fn is_refused(&self) -> bool {
        let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
        match self {
            Self::Io(e) => refused(e),
            #[cfg(feature = "client")]
            Self::Websocket(e) => {
                matches!(&**e, tokio_tungstenite::tungstenite::Error::Io(io) if refused(io))
            }
            Self::Rejected { status, .. } => matches!(status, 502 | 503),
            _ => false,
        }
    }

    /// Whether GURU3 refused the credentials (403: wrong key, or a key for another event).
    pub fn is_auth(&self) -> bool {
        self.status() == Some(403)
    }
}
