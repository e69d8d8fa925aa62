//! The token-call webhook's contract (spec `asterisk-realtime.md` §4.1), without I/O: request
//! parsing, the one-word answers, key comparison and rate limits. The listener lives in the
//! binary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use broker_core::model::Number;

/// Largest accepted request body.
pub const MAX_BODY: usize = 4096;

/// The answer: HTTP status (for logs) and the one word the dialplan branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Bound (or, for a check call, would be bound).
    Ok,
    /// No DECT extension has this token.
    UnknownToken,
    /// The token's extension already has a handset.
    AlreadyBound,
    /// The caller is not the temporary user of an unbound handset.
    NotUnbound,
    /// Malformed request.
    BadRequest,
    /// Wrong content type.
    UnsupportedMediaType,
    /// Missing or wrong key.
    Unauthorized,
    /// A peer is unavailable, or too many calls: try again later.
    Retry,
    /// Too many calls from this caller or in total.
    TooMany,
    /// Anything else.
    Error,
}

impl Reply {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::UnknownToken => 404,
            Self::AlreadyBound => 409,
            Self::NotUnbound => 403,
            Self::BadRequest => 400,
            Self::UnsupportedMediaType => 415,
            Self::Unauthorized => 401,
            Self::Retry => 503,
            Self::TooMany => 429,
            Self::Error => 500,
        }
    }

    /// The body: one ASCII word.
    pub fn word(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::UnknownToken => "UNKNOWN_TOKEN",
            Self::AlreadyBound => "ALREADY_BOUND",
            Self::NotUnbound => "NOT_UNBOUND",
            Self::BadRequest | Self::UnsupportedMediaType => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Retry | Self::TooMany => "RETRY",
            Self::Error => "ERROR",
        }
    }
}

/// A token call: the temporary number that called and the token it dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCall {
    /// The caller (its authenticated PJSIP endpoint: a temporary number).
    pub caller: Number,
    /// Token digits, prefix removed.
    pub token: String,
}

impl TokenCall {
    /// Parses a request. `content_type` is the header value. The token's service prefix
    /// (GURU3 shows `9955-<token>`) is kept: see [`candidates`](Self::candidates).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, Reply> {
        if body.len() > MAX_BODY {
            return Err(Reply::BadRequest);
        }
        let json = content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Reply::UnsupportedMediaType);
        }
        #[derive(serde::Deserialize)]
        struct Body {
            callerid: serde_json::Value,
            token: serde_json::Value,
        }
        let b: Body = serde_json::from_slice(body).map_err(|_| Reply::BadRequest)?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) if n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        let caller: Number = text(&b.callerid)
            .and_then(|s| s.parse().ok())
            .ok_or(Reply::BadRequest)?;
        let mut token = text(&b.token).ok_or(Reply::BadRequest)?;
        token.retain(|c| c != '-' && c != ' ');
        if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Reply::BadRequest);
        }
        Ok(Self { caller, token })
    }

    /// Candidate tokens: as dialled, and without the prefix (when the dialplan sent it).
    pub fn candidates(&self, prefix: &str) -> Vec<String> {
        let mut v = vec![self.token.clone()];
        if !prefix.is_empty() {
            if let Some(rest) = self.token.strip_prefix(prefix).filter(|r| !r.is_empty()) {
                v.push(rest.to_owned());
            }
        }
        v
    }
}

/// Compares a presented key with the configured one in time independent of where they differ.
pub fn keys_match(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for i in 0..expected.len().max(presented.len()) {
        let a = presented.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(a ^ b);
    }
    diff == 0
}

/// Token buckets per caller, per peer address and in total.
#[derive(Debug)]
pub struct RateLimiter {
    per_caller: (f64, f64),
    per_peer: (f64, f64),
    global: (f64, f64),
    callers: HashMap<Number, (f64, Instant)>,
    peers: HashMap<std::net::IpAddr, (f64, Instant)>,
    total: (f64, Instant),
}

impl RateLimiter {
    /// `per_caller` calls per minute each (burst the same), `global` calls per second in total.
    pub fn new(per_caller_per_min: u32, global_per_s: u32, now: Instant) -> Self {
        let pc = f64::from(per_caller_per_min.max(1));
        let g = f64::from(global_per_s.max(1));
        Self {
            per_caller: (pc, pc / 60.0),
            per_peer: (g, g),
            global: (g, g),
            callers: HashMap::new(),
            peers: HashMap::new(),
            total: (g, now),
        }
    }

    /// Limits each peer address to `per_s` calls per second (burst the same); default: the
    /// global rate.
    pub fn per_peer(mut self, per_s: u32) -> Self {
        let p = f64::from(per_s.max(1));
        self.per_peer = (p, p);
        self
    }

    /// Whether a request from `peer` may go ahead now (checked before the body is looked
    /// at, so that a flood from one address cannot use up the others' share).
    pub fn allow_peer(&mut self, peer: std::net::IpAddr, now: Instant) -> bool {
        if self.peers.len() > 10_000 {
            let keep = Duration::from_secs(120);
            self.peers
                .retain(|_, b| now.saturating_duration_since(b.1) < keep);
        }
        let cap = self.per_peer.0;
        let bucket = self.peers.entry(peer).or_insert((cap, now));
        Self::take(bucket, self.per_peer, now)
    }

    fn take(bucket: &mut (f64, Instant), (cap, rate): (f64, f64), now: Instant) -> bool {
        let dt = now.saturating_duration_since(bucket.1).as_secs_f64();
        bucket.0 = (bucket.0 + dt * rate).min(cap);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a call from `caller` may go ahead now.
    pub fn allow(&mut self, caller: &Number, now: Instant) -> bool {
        if self.callers.len() > 10_000 {
            // forget idle callers: bounded memory whatever callers claim to be
            let keep = Duration::from_secs(120);
            self.callers
                .retain(|_, b| now.saturating_duration_since(b.1) < keep);
        }
        let cap = self.per_caller.0;
        let bucket = self.callers.entry(caller.clone()).or_insert((cap, now));
        if !Self::take(bucket, self.per_caller, now) {
            return false;
        }
        Self::take(&mut self.total, self.global, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn requests_parse_or_get_the_right_word() {
        let ok = TokenCall::parse(
            JSON,
            br#"{"callerid": "01001234", "token": "05704191", "dialed": "x"}"#,
        )
        .unwrap();
        assert_eq!(
            (ok.caller.as_str(), ok.token.as_str()),
            ("01001234", "05704191")
        );
        let pre = TokenCall::parse(
            Some("application/json; charset=utf-8"),
            br#"{"callerid": 1001234, "token": "9955-05704191"}"#,
        )
        .unwrap();
        assert_eq!(pre.candidates("9955"), ["995505704191", "05704191"]);
        let cases: &[(Option<&str>, &[u8], Reply)] = &[
            (
                Some("text/plain"),
                br#"{"callerid": "1", "token": "2"}"#,
                Reply::UnsupportedMediaType,
            ),
            (None, b"{}", Reply::UnsupportedMediaType),
            (JSON, b"not json", Reply::BadRequest),
            (JSON, br#"{"callerid": "1"}"#, Reply::BadRequest),
            (
                JSON,
                br#"{"callerid": "1'; DROP TABLE", "token": "2"}"#,
                Reply::BadRequest,
            ),
            (
                JSON,
                br#"{"callerid": ["1"], "token": "2"}"#,
                Reply::BadRequest,
            ),
            (
                JSON,
                br#"{"callerid": "1", "token": "12\u0000"}"#,
                Reply::BadRequest,
            ),
            (
                JSON,
                br#"{"callerid": "1", "token": -5}"#,
                Reply::BadRequest,
            ),
            (
                JSON,
                br#"{"callerid": "1", "token": ""}"#,
                Reply::BadRequest,
            ),
        ];
        for (ct, body, want) in cases {
            assert_eq!(
                TokenCall::parse(*ct, body).unwrap_err(),
                *want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = vec![b' '; MAX_BODY + 1];
        assert_eq!(
            TokenCall::parse(JSON, &huge).unwrap_err(),
            Reply::BadRequest
        );
        assert_eq!(
            (Reply::AlreadyBound.status(), Reply::AlreadyBound.word()),
            (409, "ALREADY_BOUND")
        );
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(keys_match(b"secret", b"secret"));
        assert!(!keys_match(b"secreT", b"secret"));
        assert!(!keys_match(b"secret1", b"secret"));
        assert!(!keys_match(b"", b"secret"));
    }

    #[test]
    fn rate_limits_per_caller_and_in_total() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(3, 100, t0);
        let a: Number = "0100".parse().unwrap();
        let b: Number = "0101".parse().unwrap();
        assert!((0..3).all(|_| r.allow(&a, t0)));
        assert!(!r.allow(&a, t0), "the fourth call within a minute");
        assert!(r.allow(&b, t0), "other callers are not affected");
        assert!(
            r.allow(&a, t0 + Duration::from_secs(21)),
            "refills over time"
        );
        let mut g = RateLimiter::new(1000, 2, t0);
        let callers: Vec<Number> = (0..5).map(|i| format!("{i}").parse().unwrap()).collect();
        let allowed = callers.iter().filter(|c| g.allow(c, t0)).count();
        assert_eq!(allowed, 2);
    }
}
