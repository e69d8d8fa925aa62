//! Identifiers and protocol enumerations.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseIdError;

macro_rules! numeric_id {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
        pub struct $name(u32);

        impl $name {
            /// The value `0`, which the OMM uses for "none".
            pub const NONE: Self = Self(0);

            /// Wraps a raw value (`0` means "none").
            pub const fn new(raw: u32) -> Self {
                Self(raw)
            }

            /// The raw value.
            pub const fn get(self) -> u32 {
                self.0
            }

            /// `true` for the value `0` ("none").
            pub const fn is_none(self) -> bool {
                self.0 == 0
            }

            /// `None` for `0`, otherwise `Some(self)`.
            pub const fn non_zero(self) -> Option<Self> {
                if self.0 == 0 { None } else { Some(self) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseIdError::new($what, s, "expected a decimal number"));
                }
                s.parse::<u32>()
                    .map(Self)
                    .map_err(|_| ParseIdError::new($what, s, "out of range"))
            }
        }

        impl From<u32> for $name {
            fn from(raw: u32) -> Self {
                Self(raw)
            }
        }
    };
}

numeric_id!(
    /// A PP user id (`uid`): the OMM's key of a user record. `0` means "no user".
    Uid,
    "uid"
);
numeric_id!(
    /// A portable part number (`ppn`): the OMM's key of a handset record. `0` means "no handset".
    Ppn,
    "ppn"
);

/// International Portable Equipment Identity of a DECT handset.
///
/// Parses the OMM's spaced decimal form (`03074 0220259 3`), the same without spaces, and the
/// 10-digit hex form (`00C0235C63`). [`Display`](fmt::Display) prints the spaced decimal form,
/// which is what the OMM expects.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipei {
    emc: u16,
    psn: u32,
    check: u8,
}

impl Ipei {
    /// Largest portable serial number (20 bits).
    pub const MAX_PSN: u32 = 0xF_FFFF;

    /// Builds an IPEI from manufacturer code and serial number; the check character is computed.
    pub fn new(emc: u16, psn: u32) -> Result<Self, ParseIdError> {
        if psn > Self::MAX_PSN {
            return Err(ParseIdError::new(
                "ipei",
                &psn.to_string(),
                "serial number exceeds 20 bits",
            ));
        }
        Ok(Self {
            emc,
            psn,
            check: check_char(emc, psn),
        })
    }

    /// Equipment manufacturer code.
    pub const fn emc(self) -> u16 {
        self.emc
    }

    /// Portable serial number.
    pub const fn psn(self) -> u32 {
        self.psn
    }

    /// The check character as received (`0`–`9` or `*`).
    pub const fn check_char(self) -> char {
        self.check as char
    }

    /// Whether the stored check character matches the computed one.
    pub fn is_check_valid(self) -> bool {
        self.check == check_char(self.emc, self.psn)
    }

    /// The hex form: 10 upper-case hex digits (`0` type nibble, EMC, PSN).
    pub fn to_hex(self) -> String {
        format!("0{:04X}{:05X}", self.emc, self.psn)
    }

    /// Like [`FromStr`] but keeps a wrong check character instead of rejecting it: records read
    /// from an OMM are taken as they are.
    pub fn parse_lenient(s: &str) -> Result<Self, ParseIdError> {
        parse_ipei(s, false)
    }
}

fn check_char(emc: u16, psn: u32) -> u8 {
    let digits = format!("{emc:05}{psn:07}");
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, d)| (i as u32 + 1) * u32::from(d - b'0'))
        .sum();
    match sum % 11 {
        10 => b'*',
        n => b'0' + n as u8,
    }
}

fn parse_ipei(s: &str, strict: bool) -> Result<Ipei, ParseIdError> {
    let err = |why: &'static str| ParseIdError::new("ipei", s, why);
    if !s.is_ascii() {
        return Err(err("expected ascii digits"));
    }
    let compact: String = s.chars().filter(|c| *c != ' ').collect();
    if compact.len() == 10 && !s.contains(' ') && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        if !compact.starts_with('0') {
            return Err(err("hex form must start with the type nibble 0"));
        }
        let emc = u16::from_str_radix(&compact[1..5], 16).map_err(|_| err("bad hex"))?;
        let psn = u32::from_str_radix(&compact[5..], 16).map_err(|_| err("bad hex"))?;
        return Ipei::new(emc, psn);
    }
    if compact.len() != 13 {
        return Err(err("expected `EEEEE PPPPPPP C` or 10 hex digits"));
    }
    if s.contains(' ')
        && !(s.len() == 15 && &s[5..6] == " " && &s[13..14] == " "
            || s.len() == 14 && &s[12..13] == " ")
    {
        return Err(err("misplaced spaces"));
    }
    let (num, check) = compact.split_at(12);
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("expected decimal digits"));
    }
    let check = check.as_bytes()[0];
    if !(check.is_ascii_digit() || check == b'*') {
        return Err(err("check character must be a digit or `*`"));
    }
    let emc: u32 = num[..5].parse().map_err(|_| err("bad manufacturer code"))?;
    let psn: u32 = num[5..].parse().map_err(|_| err("bad serial number"))?;
    let emc = u16::try_from(emc).map_err(|_| err("manufacturer code exceeds 65535"))?;
    let mut ipei = Ipei::new(emc, psn).map_err(|_| err("serial number exceeds 1048575"))?;
    if ipei.check != check {
        if strict {
            return Err(err("check character does not match"));
        }
        ipei.check = check;
    }
    Ok(ipei)
}

impl FromStr for Ipei {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_ipei(s, true)
    }
}

impl fmt::Debug for Ipei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ipei({self})")
    }
}

impl fmt::Display for Ipei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05} {:07} {}", self.emc, self.psn, self.check as char)
    }
}

macro_rules! open_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $wire:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, Debug)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A value this crate does not know, kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Unknown(s) => s,
                }
            }
        }

        impl FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(match s {
                    $($wire => Self::$variant,)*
                    other => Self::Unknown(other.to_owned()),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_enum!(
    /// Relation between a user and a handset (`relType`).
    RelType {
        /// Not bound.
        Unbound = "Unbound",
        /// Bound; DECT login/logout and `SetPP` may change it.
        Dynamic = "Dynamic",
        /// Bound permanently.
        Fixed = "Fixed",
    }
);

open_enum!(
    /// DECT subscription (registration) mode of the system.
    SubscriptionMode {
        /// No handset may subscribe.
        Off = "Off",
        /// Only configured IPEIs may subscribe (expires after 24 h).
        Configured = "Configured",
        /// Any handset may subscribe (expires after the timeout).
        Wildcard = "Wildcard",
    }
);

open_enum!(
    /// DECT subscription state of a handset (`s`).
    SubscriptionState {
        /// Not subscribed.
        No = "No",
        /// Subscription not yet confirmed.
        Unconfirmed = "Unconfirmed",
        /// Subscribed.
        Yes = "Yes",
    }
);

/// Item filter of an event subscription entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Filter {
    /// No item filter attribute (type-level events such as `DECTSubscriptionMode`).
    None,
    /// Every item (`-1`).
    All,
    /// One specific item id.
    Id(u32),
}

/// One entry of a `Subscribe` request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Subscription {
    /// Event type name without the `Event` prefix, e.g. `PPDevCnf`.
    pub event_type: String,
    /// Whether to switch the subscription on (`true`) or off.
    pub on: bool,
    /// Filter on `ppn`.
    pub ppn: Filter,
    /// Filter on `uid`.
    pub uid: Filter,
}

impl Subscription {
    /// Switch an event type on with no item filter.
    pub fn on(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            on: true,
            ppn: Filter::None,
            uid: Filter::None,
        }
    }

    /// Switch an event type off.
    pub fn off(event_type: impl Into<String>) -> Self {
        Self {
            on: false,
            ..Self::on(event_type)
        }
    }

    /// Sets the `ppn` filter.
    pub fn ppn(mut self, filter: Filter) -> Self {
        self.ppn = filter;
        self
    }

    /// Sets the `uid` filter.
    pub fn uid(mut self, filter: Filter) -> Self {
        self.uid = filter;
        self
    }

    /// The subscriptions a provisioning broker needs: all device and user changes and the
    /// subscription mode.
    pub fn provisioning() -> Vec<Self> {
        vec![
            Self::on("PPDevCnf").ppn(Filter::All),
            Self::on("PPUserCnf").uid(Filter::All),
            Self::on("DECTSubscriptionMode"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ipei(input: &str, expected: Result<&str, ()>) {
        let got = input.parse::<Ipei>().map(|i| i.to_string()).map_err(|_| ());
        assert_eq!(got.as_deref().map_err(|_| ()), expected, "input {input:?}");
    }

    #[test]
    fn ipei_parsing() {
        check_ipei("03074 0220259 3", Ok("03074 0220259 3"));
        check_ipei("030740220259 3", Ok("03074 0220259 3"));
        check_ipei("0307402202593", Ok("03074 0220259 3"));
        check_ipei("00C0235C63", Ok("03074 0220259 3"));
        check_ipei("00c0235c63", Ok("03074 0220259 3"));
        check_ipei("10345 0615703 *", Ok("10345 0615703 *"));
        check_ipei("03074 0220259 4", Err(()));
        check_ipei("00000 6789055 3", Err(()));
        check_ipei("70000 0220259 3", Err(()));
        check_ipei("03074 2220259 3", Err(()));
        check_ipei("0307 40220259 3", Err(()));
        check_ipei("", Err(()));
        check_ipei("10C0235C63", Err(()));
        check_ipei("0307402202593x", Err(()));
        check_ipei("03074 0220259 ü", Err(()));
    }

    #[test]
    fn ipei_hex_round_trip() {
        let ipei: Ipei = "03074 0220259 3".parse().unwrap();
        assert_eq!(ipei.to_hex(), "00C0235C63");
        assert_eq!(ipei.to_hex().parse::<Ipei>().unwrap(), ipei);
    }

    #[test]
    fn lenient_ipei_keeps_wrong_check() {
        let ipei = Ipei::parse_lenient("00000 6789055 3").unwrap_err();
        assert_eq!(ipei.reason(), "serial number exceeds 1048575");
        let ipei = Ipei::parse_lenient("03074 0220259 4").unwrap();
        assert!(!ipei.is_check_valid());
        assert_eq!(ipei.to_string(), "03074 0220259 4");
    }

    #[test]
    fn ids_reject_non_digits() {
        assert!("12".parse::<Uid>().is_ok());
        assert!("-1".parse::<Uid>().is_err());
        assert!("+1".parse::<Ppn>().is_err());
        assert!("99999999999".parse::<Ppn>().is_err());
        assert!("4294967296".parse::<Ppn>().is_err());
    }
}
