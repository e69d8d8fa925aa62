//! Temporary numbers and the IPEI blocklist.

use broker_core::model::Number;

/// Temporary numbers: a fixed prefix GURU3 never assigns, then random digits (CSPRNG).
#[derive(Debug, Clone)]
pub struct TempNumbers {
    prefix: String,
    length: usize,
}

impl TempNumbers {
    /// `prefix` digits, `length` digits in total (at least 4 random ones).
    pub fn new(prefix: &str, length: usize) -> Result<Self, String> {
        if !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.is_empty() {
            return Err(format!("temporary prefix {prefix:?} must be digits"));
        }
        if length < prefix.len() + 4 || length > 32 {
            return Err(format!(
                "temporary numbers of {length} digits leave too few random digits after {prefix:?}"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            length,
        })
    }

    /// A fresh candidate (check it is free before use).
    pub fn generate(&self) -> Number {
        let mut b = vec![0u8; self.length - self.prefix.len()];
        let _ = getrandom::fill(&mut b);
        let digits: String = b.iter().map(|x| char::from(b'0' + x % 10)).collect();
        format!("{}{digits}", self.prefix)
            .parse()
            .unwrap_or_else(|_| unreachable!("digits only"))
    }

    /// Whether a number is from the temporary range.
    pub fn is_temp(&self, n: &Number) -> bool {
        n.as_str().len() == self.length && n.as_str().starts_with(&self.prefix)
    }
}

/// IPEI patterns never bound (`*` any run of characters, `?` one character).
#[derive(Debug, Clone, Default)]
pub struct Blocklist(Vec<String>);

impl Blocklist {
    /// From patterns.
    pub fn new(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    /// Whether the IPEI matches a pattern.
    pub fn blocks(&self, ipei: &str) -> bool {
        self.0.iter().any(|p| glob(p.as_bytes(), ipei.as_bytes()))
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_numbers_have_the_prefix_and_length() {
        let t = TempNumbers::new("0100", 8).unwrap();
        let n = t.generate();
        assert!(
            t.is_temp(&n) && n.as_str().len() == 8 && n.as_str().starts_with("0100"),
            "{n}"
        );
        assert_ne!(t.generate(), t.generate(), "random (1 in 10,000 to fail)");
        assert!(!t.is_temp(&"2001".parse().unwrap()));
        assert!(TempNumbers::new("01x", 8).is_err());
        assert!(TempNumbers::new("0100", 6).is_err());
    }

    #[test]
    fn blocklist_patterns() {
        let b = Blocklist::new(vec!["03587 *".into(), "?0077 3216549 7".into()]);
        assert!(b.blocks("03587 0412396 2"));
        assert!(b.blocks("00077 3216549 7"));
        assert!(!b.blocks("01842 0093371 6"));
        assert!(!Blocklist::default().blocks("03587 0412396 2"));
    }
}
