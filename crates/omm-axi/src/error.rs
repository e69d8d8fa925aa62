//! Errors.

use std::fmt;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to an OMM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket error.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// TLS handshake or record error.
    #[cfg(feature = "client")]
    #[error("tls error")]
    Tls(#[source] rustls::Error),
    /// The OMM refused every TLS version and cipher suite rustls offers: older firmwares offer
    /// only static-RSA key exchange or TLS below 1.2 (spec §1.2).
    #[cfg(feature = "client")]
    #[error(
        "the OMM refused every TLS version and cipher suite of the rustls backend: older OMM \
         firmwares offer only static-RSA key exchange (TLS_RSA_WITH_AES_256_GCM_SHA384 and \
         the like) or TLS below 1.2, which rustls does not implement; connect through the \
         OpenSSL backend (cargo feature `openssl`; in hexidian's config \
         `[omm] tls_backend = \"openssl\"`, see `min_protocol` and `ciphers`)"
    )]
    TlsLegacyPeer(#[source] rustls::Error),
    /// TLS handshake or record error of the OpenSSL backend.
    #[cfg(feature = "openssl")]
    #[error("tls error (OpenSSL): {0}")]
    OpensslTls(String),
    /// The OMM sent something invalid or unexpected.
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The OMM answered the request with an error code.
    #[error("{0}")]
    Rejected(OmmError),
    /// No answer within the request timeout (or the keep-alive timeout).
    #[error("`{request}` timed out (seq {seq})")]
    Timeout {
        /// Name of the request.
        request: String,
        /// Its sequence number.
        seq: u32,
    },
    /// The connection is closed; the request may or may not have been executed.
    #[error("connection closed")]
    Closed,
    /// A secret could not be encrypted.
    #[error("secret field `{field}` cannot be sent")]
    Secret {
        /// Wire name of the attribute.
        field: &'static str,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// Invalid configuration or argument.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

impl Error {
    /// The OMM's own error report, if the OMM rejected the request.
    pub fn as_omm_error(&self) -> Option<&OmmError> {
        match self {
            Self::Rejected(e) => Some(e),
            _ => None,
        }
    }

    /// The OMM's error code, if the OMM rejected the request.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.as_omm_error().map(|e| &e.code)
    }

    /// Whether retrying the same request later may succeed (connection trouble, timeouts,
    /// "busy" answers).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) | Self::Timeout { .. } | Self::Closed => true,
            #[cfg(feature = "client")]
            Self::Tls(_) | Self::TlsLegacyPeer(_) => true,
            #[cfg(feature = "openssl")]
            Self::OpensslTls(_) => true,
            Self::Rejected(e) => e.code.is_transient(),
            _ => false,
        }
    }

    /// Whether the connection is gone (reconnect before retrying).
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed | Self::Io(_))
    }
}

/// The OMM's error report from a `…Resp` carrying `errCode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OmmError {
    /// Name of the request that failed.
    pub request: String,
    /// The error code.
    pub code: ErrorCode,
    /// Free text for humans (`info`).
    pub info: Option<String>,
    /// The offending attribute or element (`bad`).
    pub bad: Option<String>,
    /// Maximum length in characters for `ETooLong` (`maxLen`).
    pub max_len: Option<u32>,
}

impl fmt::Display for OmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "omm rejected `{}` with {}", self.request, self.code)?;
        if let Some(bad) = &self.bad {
            write!(f, " (bad `{bad}`")?;
            if let Some(max) = self.max_len {
                write!(f, ", max {max} chars")?;
            }
            f.write_str(")")?;
        }
        if let Some(info) = &self.info {
            write!(f, ": {info}")?;
        }
        Ok(())
    }
}

macro_rules! error_codes {
    ($($variant:ident = $wire:literal: $doc:literal,)*) => {
        /// OM AXI `errCode` values.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
            /// A code this crate does not know (newer firmware), kept verbatim.
            Unknown(String),
        }

        impl ErrorCode {
            /// Parses the wire value; unknown codes are kept.
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($wire => Self::$variant,)*
                    other => Self::Unknown(other.to_owned()),
                }
            }

            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Unknown(s) => s,
                }
            }
        }
    };
}

error_codes! {
    AreaFull = "EAreaFull": "Paging area has no room for another RFP.",
    Auth = "EAuth": "Authentication failed.",
    DectRegDomainInvalid = "EDectRegDomainInvalid": "DECT regulatory domain not set.",
    EncryptNotAllowed = "EEncryptNotAllowed": "DECT encryption cannot be enabled.",
    Exist = "EExist": "A value that must be unique already exists.",
    Failed = "EFailed": "Generic failure; the request was not executed.",
    Forbidden = "EForbidden": "Operation not allowed on this object.",
    InProgress = "EInProgress": "Another transaction is running; retry later.",
    Inval = "EInval": "Invalid attribute value (see `bad`).",
    InvalidChars = "EInvalidChars": "A string contains characters that are not allowed.",
    License = "ELicense": "Refused because of licence restrictions.",
    LicenseFile = "ELicenseFile": "Refused because of licence-file restrictions.",
    LicenseWrongInstallId = "ELicenseWrongInstallId": "Licence file has a wrong installation id.",
    Missing = "EMissing": "A mandatory attribute or element is missing (see `bad`).",
    NoEnt = "ENoEnt": "No such record (also the end of a paged listing).",
    NoMem = "ENoMem": "No more records can be created.",
    Perm = "EPerm": "The account lacks the required permission.",
    PwEmpty = "EPwEmpty": "Account password policy: empty.",
    PwUnchanged = "EPwUnchanged": "Account password policy: unchanged.",
    PwSimilarToHost = "EPwSimilarToHost": "Account password policy: similar to host name.",
    PwSimilarToName = "EPwSimilarToName": "Account password policy: similar to user name.",
    PwTooManySimilarChars = "EPwTooManySimilarChars": "Account password policy: too many similar characters.",
    PwTooShort = "EPwTooShort": "Account password policy: too short.",
    PwTooSimilar = "EPwTooSimilar": "Account password policy: too similar to the old one.",
    PwTooWeak = "EPwTooWeak": "Account password policy: too weak.",
    TooLong = "ETooLong": "A string is too long (see `bad`, `maxLen`).",
    WlanRegDomainInvalid = "EWlanRegDomainInvalid": "WLAN regulatory domain not set.",
}

impl ErrorCode {
    /// Codes after which the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::InProgress | Self::Failed)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OMM sent something this crate cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame grew beyond the configured maximum before its NUL terminator arrived.
    #[error("frame exceeds {max} bytes")]
    FrameTooLarge {
        /// The limit.
        max: usize,
    },
    /// A frame is not valid UTF-8.
    #[error("frame is not valid utf-8 at byte {valid_up_to}")]
    Utf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A frame nests elements deeper than OM AXI ever does.
    #[error("xml nests deeper than {max} elements")]
    TooDeep {
        /// The limit ([`MAX_DEPTH`](crate::proto::xml::MAX_DEPTH)).
        max: usize,
    },
    /// A frame is not well-formed XML.
    #[error("malformed xml: {message}")]
    Xml {
        /// The parser's description, with position.
        message: String,
    },
    /// A frame's root element is neither a response nor an event.
    #[error("unexpected message `{name}`")]
    UnexpectedMessage {
        /// Root element name.
        name: String,
    },
    /// A response did not match the request it answered.
    #[error("expected `{expected}` but got `{got}` for seq {seq}")]
    MismatchedResponse {
        /// The response name the request calls for.
        expected: String,
        /// What arrived.
        got: String,
        /// The sequence number.
        seq: u32,
    },
    /// A response with a sequence number nobody waits for (late after a timeout, or bogus).
    #[error("response `{name}` with unknown seq {seq:?}")]
    UnknownSeq {
        /// Response name.
        name: String,
        /// Its seq attribute.
        seq: Option<String>,
    },
    /// A required attribute is missing.
    #[error("`{element}` lacks attribute `{attribute}`")]
    MissingAttribute {
        /// Element name.
        element: String,
        /// Attribute name.
        attribute: &'static str,
    },
    /// A required child element is missing.
    #[error("`{element}` lacks child `{child}`")]
    MissingChild {
        /// Element name.
        element: String,
        /// Child element name.
        child: &'static str,
    },
    /// An attribute holds a value that cannot be used.
    #[error("`{element}` attribute `{attribute}` has invalid value {value:?}: {reason}")]
    InvalidAttribute {
        /// Element name.
        element: String,
        /// Attribute name.
        attribute: String,
        /// The value (truncated to 64 characters).
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A single-record get returned a different record than asked for.
    #[error("asked for {what} {asked} but the omm returned {got}")]
    WrongRecord {
        /// `uid` or `ppn`.
        what: &'static str,
        /// Requested key.
        asked: u32,
        /// Returned key.
        got: u32,
    },
}

impl ProtocolError {
    pub(crate) fn invalid(
        element: &str,
        attribute: &str,
        value: &str,
        reason: &'static str,
    ) -> Self {
        Self::InvalidAttribute {
            element: element.to_owned(),
            attribute: attribute.to_owned(),
            value: value.chars().take(64).collect(),
            reason,
        }
    }
}

/// Why a secret could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The plaintext does not fit into one RSA block.
    #[error("secret is {len} bytes but the omm key allows at most {max}")]
    TooLong {
        /// Plaintext length in bytes.
        len: usize,
        /// Limit (modulus bytes − 11).
        max: usize,
    },
    /// Secrets are restricted to printable ASCII.
    #[error("secret contains characters outside printable ascii")]
    NotPrintableAscii,
    /// No public key is known yet (not logged in).
    #[error("no omm public key (not logged in)")]
    NoKey,
    /// The public key from the OMM is unusable.
    #[error("invalid omm public key: {0}")]
    BadKey(&'static str),
    /// The OS random number generator failed.
    #[error("os random number generator failed")]
    Random,
}

/// A string that is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseIdError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

impl ParseIdError {
    pub(crate) fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            what,
            value: value.chars().take(64).collect(),
            reason,
        }
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}
