//! Secrets: redacting wrapper and the OMM's RSA PKCS#1 v1.5 encryption of secret attributes.

use std::fmt;

use base64::Engine as _;
use num_bigint::BigUint;

use crate::error::SecretError;

/// A plaintext secret (password, PIN). `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    /// Wraps a plaintext secret.
    pub fn new(plain: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(plain.into()))
    }

    /// The plaintext. Do not log it.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl Default for Secret {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// Value of a secret attribute (`pin`, `sipPw`, `credentialPw`, `serviceAuthPassword`).
///
/// The OMM returns these as fresh ciphertexts under its own key; the client can neither read
/// nor compare them, only send them back unchanged. Neither variant shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretValue {
    /// A plaintext to encrypt with the session's key when the request is encoded.
    Plain(Secret),
    /// A base64 ciphertext as received from the OMM.
    Encrypted(String),
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Encrypted(_) => f.write_str("Encrypted(<opaque>)"),
        }
    }
}

impl From<Secret> for SecretValue {
    fn from(s: Secret) -> Self {
        Self::Plain(s)
    }
}

/// An attribute value that is sensitive but not encrypted on the wire (UAK, authentication
/// codes): a [`Secret`] sent as it is. `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive(Secret);

impl Sensitive {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Secret::new(value))
    }

    /// The value. Do not log it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.expose().is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// The OMM's RSA public key (from `OpenResp` or `GetPublicKey`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    n: BigUint,
    e: BigUint,
    len: usize,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.n.bits())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Builds a key from the hex strings of `publicKey/@modulus` and `@exponent`.
    pub fn from_hex(modulus: &str, exponent: &str) -> Result<Self, SecretError> {
        let parse = |s: &str| {
            if s.is_empty() || s.len() > 2048 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SecretError::BadKey("not a hex number"));
            }
            BigUint::parse_bytes(s.as_bytes(), 16).ok_or(SecretError::BadKey("not a hex number"))
        };
        let n = parse(modulus)?;
        let e = parse(exponent)?;
        let bits = n.bits();
        if !(256..=8192).contains(&bits) {
            return Err(SecretError::BadKey("modulus size out of range"));
        }
        if e < BigUint::from(3u8) || e >= n {
            return Err(SecretError::BadKey("bad exponent"));
        }
        Ok(Self {
            len: bits.div_ceil(8) as usize,
            n,
            e,
        })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> u64 {
        self.n.bits()
    }

    /// The longest plaintext in bytes that fits into one PKCS#1 v1.5 block (53 for 512 bits).
    pub fn max_plaintext_len(&self) -> usize {
        self.len - 11
    }

    /// Encrypts `plain` (printable ASCII) with RSAES-PKCS1-v1_5 and returns standard base64.
    pub fn encrypt(&self, plain: &str) -> Result<String, SecretError> {
        self.encrypt_with(plain, &mut |buf| {
            getrandom::fill(buf).map_err(|_| SecretError::Random)
        })
    }

    /// [`encrypt`](Self::encrypt) with a caller-supplied random source (deterministic tests).
    pub fn encrypt_with(
        &self,
        plain: &str,
        random: &mut dyn FnMut(&mut [u8]) -> Result<(), SecretError>,
    ) -> Result<String, SecretError> {
        if !plain.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(SecretError::NotPrintableAscii);
        }
        let max = self.max_plaintext_len();
        if plain.len() > max {
            return Err(SecretError::TooLong {
                len: plain.len(),
                max,
            });
        }
        // EM = 0x00 || 0x02 || PS (non-zero random, >= 8 bytes) || 0x00 || M
        let mut em = vec![0u8; self.len];
        em[1] = 2;
        let ps_len = self.len - 3 - plain.len();
        let ps = &mut em[2..2 + ps_len];
        random(ps)?;
        for b in ps.iter_mut() {
            while *b == 0 {
                let mut one = [0u8; 1];
                random(&mut one)?;
                *b = one[0];
            }
        }
        em[3 + ps_len..].copy_from_slice(plain.as_bytes());
        let c = BigUint::from_bytes_be(&em).modpow(&self.e, &self.n);
        let mut out = c.to_bytes_be();
        while out.len() < self.len {
            out.insert(0, 0);
        }
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = include_str!("../../../fixtures/omm-axi/sim-rsa512.hex");

    fn field(name: &str) -> &'static str {
        KEY.lines().find_map(|l| l.strip_prefix(name)).unwrap()
    }

    fn key() -> PublicKey {
        PublicKey::from_hex(field("n="), field("e=")).unwrap()
    }

    #[test]
    fn decrypts_with_the_private_key() {
        let c = key().encrypt("s3cret-PIN 42").unwrap();
        let c = base64::engine::general_purpose::STANDARD.decode(c).unwrap();
        let n = BigUint::parse_bytes(field("n=").as_bytes(), 16).unwrap();
        let d = BigUint::parse_bytes(field("d=").as_bytes(), 16).unwrap();
        let m = BigUint::from_bytes_be(&c).modpow(&d, &n).to_bytes_be();
        // leading 0x00 is dropped by to_bytes_be: block type 2 comes first
        assert_eq!(m[0], 2);
        let sep = m.iter().skip(1).position(|b| *b == 0).unwrap() + 1;
        assert!(sep >= 9, "at least 8 padding bytes");
        assert_eq!(&m[sep + 1..], b"s3cret-PIN 42");
    }

    #[test]
    fn limits_follow_key_size() {
        let key = key();
        assert_eq!(key.bits(), 512);
        assert_eq!(key.max_plaintext_len(), 53);
        let ok = "x".repeat(53);
        assert_eq!(key.encrypt(&ok).map(|c| c.len()), Ok(88));
        assert_eq!(
            key.encrypt(&"x".repeat(54)),
            Err(SecretError::TooLong { len: 54, max: 53 })
        );
        assert_eq!(key.encrypt("pässword"), Err(SecretError::NotPrintableAscii));
        assert_eq!(key.encrypt("a\u{0}b"), Err(SecretError::NotPrintableAscii));
    }

    #[test]
    fn ciphertexts_differ_between_calls() {
        let key = key();
        assert_ne!(key.encrypt("1234").unwrap(), key.encrypt("1234").unwrap());
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(PublicKey::from_hex("zz", "3").is_err());
        assert!(PublicKey::from_hex("FF", "3").is_err());
        assert!(PublicKey::from_hex(field("n="), "1").is_err());
        assert!(PublicKey::from_hex(field("n="), "").is_err());
    }

    #[test]
    fn debug_redacts() {
        let s = format!(
            "{:?} {:?} {:?}",
            Secret::new("hunter2"),
            SecretValue::Plain("hunter2".into()),
            Sensitive::new("ABCD")
        );
        assert!(!s.contains("hunter2") && !s.contains("ABCD"), "{s}");
    }
}
