//! The simulator's RSA key: decrypts secrets the client sends, encrypts secrets it returns.

use base64::Engine as _;
use num_bigint::BigUint;

/// Key size of the built-in test keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeySize {
    /// 512 bits, as observed on real OMMs (53-byte secret limit).
    #[default]
    Bits512,
    /// 1024 bits.
    Bits1024,
}

#[derive(Debug)]
pub(crate) struct RsaKey {
    n: BigUint,
    e: BigUint,
    d: BigUint,
    len: usize,
    /// Ciphertexts already made, by plaintext: every record the simulator returns or
    /// announces carries its secrets encrypted, and a 10,000-user event would otherwise spend
    /// most of the simulator's time in RSA. Any valid ciphertext is as good as a fresh one
    /// to a client, which can only decrypt it.
    made: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Plaintexts whose ciphertexts are kept at most (the cache starts over when full).
const MADE: usize = 65_536;

impl RsaKey {
    pub(crate) fn builtin(size: KeySize) -> Self {
        let text = match size {
            KeySize::Bits512 => include_str!("../../../fixtures/omm-axi/sim-rsa512.hex"),
            KeySize::Bits1024 => include_str!("../../../fixtures/omm-axi/sim-rsa1024.hex"),
        };
        let get = |p: &str| {
            let hex = text
                .lines()
                .find_map(|l| l.strip_prefix(p))
                .expect("fixture key has n, e and d");
            BigUint::parse_bytes(hex.trim().as_bytes(), 16).expect("fixture key is hex")
        };
        let n = get("n=");
        let len = n.bits().div_ceil(8) as usize;
        Self {
            e: get("e="),
            d: get("d="),
            n,
            len,
            made: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn modulus_hex(&self) -> String {
        self.n.to_str_radix(16).to_uppercase()
    }

    pub(crate) fn exponent_hex(&self) -> String {
        let s = self.e.to_str_radix(16).to_uppercase();
        if s.len() % 2 == 1 { format!("0{s}") } else { s }
    }

    /// Base64 ciphertext → plaintext, or `None` if it is not a valid PKCS#1 v1.5 block.
    pub(crate) fn decrypt(&self, b64: &str) -> Option<String> {
        let c = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        if c.len() != self.len {
            return None;
        }
        let c = BigUint::from_bytes_be(&c);
        if c >= self.n {
            return None;
        }
        let m = c.modpow(&self.d, &self.n).to_bytes_be();
        // m lost its leading zero byte: expect 0x02, >= 8 non-zero padding bytes, 0x00, message
        if m.len() != self.len - 1 || m[0] != 2 {
            return None;
        }
        let sep = m.iter().skip(1).position(|b| *b == 0)? + 1;
        if sep < 9 {
            return None;
        }
        String::from_utf8(m[sep + 1..].to_vec()).ok()
    }

    pub(crate) fn encrypt(&self, plain: &str) -> String {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = made.get(plain) {
            return c.clone();
        }
        if made.len() >= MADE {
            made.clear();
        }
        let c = self.encrypt_fresh(plain);
        made.insert(plain.to_owned(), c.clone());
        c
    }

    fn encrypt_fresh(&self, plain: &str) -> String {
        let mut em = vec![0u8; self.len];
        em[1] = 2;
        let ps_len = self.len.saturating_sub(3 + plain.len()).max(8);
        let mut ps = vec![0u8; ps_len];
        getrandom::fill(&mut ps).expect("os random");
        for b in &mut ps {
            if *b == 0 {
                *b = 0x5a;
            }
        }
        let body = &plain.as_bytes()[..plain.len().min(self.len - 11)];
        em[2..2 + ps_len].copy_from_slice(&ps);
        em[3 + ps_len..3 + ps_len + body.len()].copy_from_slice(body);
        let c = BigUint::from_bytes_be(&em)
            .modpow(&self.e, &self.n)
            .to_bytes_be();
        let mut out = vec![0u8; self.len - c.len()];
        out.extend_from_slice(&c);
        base64::engine::general_purpose::STANDARD.encode(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        for size in [KeySize::Bits512, KeySize::Bits1024] {
            let k = RsaKey::builtin(size);
            assert_eq!(k.decrypt(&k.encrypt("1234")).as_deref(), Some("1234"));
            assert_eq!(k.decrypt(&k.encrypt("")).as_deref(), Some(""));
            assert_eq!(k.decrypt("bm90IHJzYQ=="), None);
            assert_eq!(k.decrypt("%%%"), None);
        }
    }
}
