//! Validated identifiers and small value types of the GURU3 wire protocol (spec §10).

use std::fmt;
use std::str::FromStr;

/// Why a value was refused by one of the validating constructors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    /// Which kind of value (`extension`, `token`, `ipei`, …).
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

const fn invalid(what: &'static str, reason: &'static str) -> InvalidValue {
    InvalidValue { what, reason }
}

/// A GURU3 event id (the positive integer in `/api/event/<id>/messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(u32);

impl EventId {
    /// Wraps a positive event id.
    pub fn new(id: u32) -> Result<Self, InvalidValue> {
        if id == 0 {
            return Err(invalid("event id", "must be positive"));
        }
        Ok(Self(id))
    }

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for EventId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("event id", "must be decimal digits"));
        }
        let n = s
            .parse::<u32>()
            .map_err(|_| invalid("event id", "out of range"))?;
        Self::new(n)
    }
}

/// The id of an outbound wire message: what goes into `acklist`.
///
/// Ids are a global database sequence with gaps; they are **not** a cursor (spec §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(i64);

impl MessageId {
    /// Wraps a raw id (GURU3 ids are positive).
    pub fn new(id: i64) -> Result<Self, InvalidValue> {
        if id <= 0 {
            return Err(invalid("message id", "must be positive"));
        }
        Ok(Self(id))
    }

    /// The numeric id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for MessageId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = s
            .parse::<i64>()
            .map_err(|_| invalid("message id", "not an integer"))?;
        Self::new(n)
    }
}

fn digits(s: &str, what: &'static str, max: usize) -> Result<(), InvalidValue> {
    if s.is_empty() {
        return Err(invalid(what, "empty"));
    }
    if s.len() > max {
        return Err(invalid(what, "too long"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(what, "must be ASCII digits only"));
    }
    Ok(())
}

/// An extension number: 1–32 ASCII digits, kept as a string (leading zeros are significant).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extension(String);

impl Extension {
    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Extension {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        digits(s, "extension", 32)?;
        Ok(Self(s.to_owned()))
    }
}

/// A DECT/GSM registration token: 1–32 ASCII digits, compared as a string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// The token digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    // a token claims a handset for an extension: not a secret in GURU3's eyes (it is shown to
    // the user), but it does not belong in logs either
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} digits>)", self.0.len())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Token {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        digits(s, "token", 32)?;
        Ok(Self(s.to_owned()))
    }
}

/// A DECT handset identity in GURU3's (and the OMM's) text form `DDDDD DDDDDDD C`.
///
/// The check character is not verified on parse, exactly like GURU3; [`Ipei::check_digit_ok`]
/// tells whether it matches the ETSI rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipei(String);

impl Ipei {
    /// The IPEI text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Computes the ETSI check character of the 12 digits: Σ(digitᵢ × i) mod 11, 10 as `*`.
    pub fn expected_check(&self) -> char {
        let sum: u32 = self
            .0
            .bytes()
            .filter(u8::is_ascii_digit)
            .take(12)
            .zip(1u32..)
            .map(|(d, i)| u32::from(d - b'0') * i)
            .sum();
        match sum % 11 {
            10 => '*',
            d => char::from(b'0' + d as u8),
        }
    }

    /// Whether the check character matches the ETSI rule.
    pub fn check_digit_ok(&self) -> bool {
        self.0.ends_with(self.expected_check())
    }
}

impl fmt::Display for Ipei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Ipei {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 15
            && b[..5].iter().all(u8::is_ascii_digit)
            && b[5] == b' '
            && b[6..13].iter().all(u8::is_ascii_digit)
            && b[13] == b' '
            && (b[14].is_ascii_digit() || b[14] == b'*');
        if !ok {
            return Err(invalid("ipei", "expected `DDDDD DDDDDDD C`"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A handset's 128-bit user authentication key, 32 hex digits, upper-cased on parse.
///
/// It is key material: `Debug` redacts it.
#[derive(Clone)]
pub struct Uak(secrecy::SecretString);

impl Uak {
    /// The key in upper-case hex.
    pub fn expose(&self) -> &str {
        reveal(&self.0)
    }
}

impl fmt::Debug for Uak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Uak(<redacted>)")
    }
}

impl FromStr for Uak {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("uak", "expected 32 hex digits"));
        }
        Ok(Self(boxed(s.to_ascii_uppercase())))
    }
}

/// A SIP digest password as GURU3 sends it for `SIP` extensions. `Debug` redacts it.
#[derive(Clone)]
pub struct SipPassword(secrecy::SecretString);

impl SipPassword {
    /// The plaintext password.
    pub fn expose(&self) -> &str {
        reveal(&self.0)
    }
}

impl fmt::Debug for SipPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SipPassword(<redacted>)")
    }
}

impl FromStr for SipPassword {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(invalid(
                "password",
                "empty: set a SIP password for this extension in GURU3",
            ));
        }
        if s.len() > 128 {
            return Err(invalid("password", "too long"));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("password", "contains control characters"));
        }
        Ok(Self(boxed(s.to_owned())))
    }
}

/// The SHA-512 (128 lower-case hex digits) naming an uploaded audio file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AudioHash(String);

impl AudioHash {
    /// The hash as lower-case hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AudioHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AudioHash {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 128 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("audio hash", "expected 128 lower-case hex digits"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// The event's mgr key `<event_id>$<secret>`. `Debug` and `Display` never show the secret.
#[derive(Clone)]
pub struct ApiKey {
    full: secrecy::SecretString,
    event: EventId,
}

impl ApiKey {
    /// The event id the key belongs to (the part before `$`).
    pub fn event_id(&self) -> EventId {
        self.event
    }

    /// The whole key, as sent in the `ApiKey` header.
    pub fn expose(&self) -> &str {
        reveal(&self.full)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}$<redacted>)", self.event)
    }
}

impl FromStr for ApiKey {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, secret) = s
            .split_once('$')
            .ok_or(invalid("api key", "expected `<event id>$<secret>`"))?;
        let event = id
            .parse::<EventId>()
            .map_err(|_| invalid("api key", "prefix before `$` is not an event id"))?;
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(
                "api key",
                "secret must be ASCII letters and digits",
            ));
        }
        Ok(Self {
            full: boxed(s.to_owned()),
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: FromStr<Err = InvalidValue>>(input: &str, ok: bool) {
        assert_eq!(input.parse::<T>().is_ok(), ok, "{input:?}");
    }

    #[test]
    fn extensions_are_digit_strings() {
        check::<Extension>("2001", true);
        check::<Extension>("0042", true);
        check::<Extension>(&"9".repeat(32), true);
        check::<Extension>(&"9".repeat(33), false);
        check::<Extension>("", false);
        check::<Extension>("20 1", false);
        check::<Extension>("２００１", false);
        check::<Extension>("2001\0", false);
        assert_eq!("0042".parse::<Extension>().unwrap().to_string(), "0042");
    }

    #[test]
    fn ipei_shape_and_check_digit() {
        check::<Ipei>("03587 0412396 2", true);
        check::<Ipei>("00077 3216549 *", true);
        check::<Ipei>("018420093371 6", false);
        check::<Ipei>("0358704123962", false);
        check::<Ipei>("03587 0412396 22", false);
        let ok: Ipei = "03587 0412396 2".parse().unwrap();
        assert!(ok.check_digit_ok());
        let bad: Ipei = "03587 0412396 3".parse().unwrap();
        assert!(!bad.check_digit_ok());
        assert_eq!(bad.expected_check(), '2');
    }

    #[test]
    fn uak_is_upper_cased_and_redacted() {
        let u: Uak = "351b50aa981aab5cf7fe6151b2719394".parse().unwrap();
        assert_eq!(u.expose(), "351B50AA981AAB5CF7FE6151B2719394");
        assert_eq!(format!("{u:?}"), "Uak(<redacted>)");
        check::<Uak>("351b50aa981aab5cf7fe6151b271939", false);
        check::<Uak>("351b50aa981aab5cf7fe6151b271939g", false);
    }

    #[test]
    fn api_key_prefix_and_redaction() {
        let k: ApiKey = "7$EXAMPLEexample0123".parse().unwrap();
        assert_eq!(k.event_id().get(), 7);
        assert_eq!(format!("{k:?}"), "ApiKey(7$<redacted>)");
        check::<ApiKey>("EXAMPLE", false);
        check::<ApiKey>("x$abc", false);
        check::<ApiKey>("0$abc", false);
        check::<ApiKey>("7$", false);
        check::<ApiKey>("7$ab$c", false);
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let p: SipPassword = "e1vdxzqL".parse().unwrap();
        let t: Token = "05704191".parse().unwrap();
        assert!(!format!("{p:?}{t:?}").contains("e1vdxzqL"));
        assert!(!format!("{t:?}").contains("05704191"));
        assert_eq!(t.as_str(), "05704191");
    }

    #[test]
    fn ids() {
        check::<EventId>("7", true);
        check::<EventId>("0", false);
        check::<EventId>("-1", false);
        check::<EventId>("+7", false);
        check::<MessageId>("52001", true);
        check::<MessageId>("0", false);
        check::<AudioHash>(&"a".repeat(128), true);
        check::<AudioHash>(&"A".repeat(128), false);
    }
}

/// Secret values are kept in `secrecy`'s box: zeroised when dropped, never serialisable.
fn boxed(s: String) -> secrecy::SecretString {
    secrecy::SecretString::from(s)
}

fn reveal(b: &secrecy::SecretString) -> &str {
    secrecy::ExposeSecret::expose_secret(b)
}

/// Equality (and hashing) by value, for types whose value is a secret.
macro_rules! by_exposed_value {
    ($($t:ty),*) => {$(
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.expose() == other.expose()
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.expose().hash(state);
            }
        }
    )*};
}
by_exposed_value!(Uak, SipPassword, ApiKey);
