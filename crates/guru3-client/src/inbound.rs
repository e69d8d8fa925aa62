//! The POST side (spec §3.3–§3.4): acks, inbound messages and GURU3's per-message results.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::message::DecodeError;
use crate::types::{Extension, Ipei, MessageId, Uak};

/// One POST carries at most this many ids (what guru3.md §3.3 advises; GURU3 reads at most
/// 2.5 MiB of form data).
pub const MAX_ACKS_PER_POST: usize = 1000;

/// An inbound message (consumer → GURU3).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Inbound {
    /// A handset is now bound to a DECT extension.
    #[doc(alias = "ASSIGN_HANDSET")]
    AssignHandset {
        /// Our own reference id (echoed back), 0 ..= 2^31-1.
        id: u32,
        /// Unix seconds.
        timestamp: f64,
        /// The handset.
        ipei: Ipei,
        /// Its key.
        uak: Uak,
        /// The extension it is bound to.
        extension: Extension,
    },
}

impl Inbound {
    /// Our reference id.
    pub fn id(&self) -> u32 {
        match self {
            Self::AssignHandset { id, .. } => *id,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::AssignHandset {
                id,
                timestamp,
                ipei,
                uak,
                extension,
            } => json!({
                "id": id,
                "timestamp": timestamp,
                "type": "ASSIGN_HANDSET",
                "data": {"ipei": ipei.as_str(), "uak": uak.expose(), "extension": extension.as_str()},
            }),
        }
    }
}

/// GURU3's verdict on one inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InboundResult {
    /// The id we sent.
    pub id: i64,
    /// `OK` or `NAK`.
    pub status: InboundStatus,
    /// Empty on OK, else the reason (`Parsing error: …` / `Processing error: …`).
    #[serde(default)]
    pub text: String,
}

/// `status` of an [`InboundResult`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum InboundStatus {
    /// Accepted and stored.
    #[serde(rename = "OK")]
    Ok,
    /// Refused; retrying the same message will not help.
    #[serde(rename = "NAK")]
    Nak,
    /// Anything else.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct PostResponse {
    messages: Vec<InboundResult>,
}

/// Decodes the 200 body of a POST.
pub fn decode_post_response(body: &[u8]) -> Result<Vec<InboundResult>, DecodeError> {
    serde_json::from_slice::<PostResponse>(body)
        .map(|r| r.messages)
        .map_err(|e| DecodeError::Json {
            context: "post response".into(),
            source: e,
        })
}

/// The urlencoded POST body: `acklist` always present, `messages` only when non-empty.
pub fn encode_post_body(acks: &[MessageId], inbound: &[Inbound]) -> String {
    let ids = Value::Array(acks.iter().map(|i| Value::from(i.get())).collect()).to_string();
    let mut body = String::from("acklist=");
    form_escape_into(&ids, &mut body);
    if !inbound.is_empty() {
        let msgs = Value::Array(inbound.iter().map(Inbound::to_json).collect()).to_string();
        body.push_str("&messages=");
        form_escape_into(&msgs, &mut body);
    }
    body
}

/// `application/x-www-form-urlencoded` escaping of one value (space as `+`).
fn form_escape_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_body_matches_the_sample_shape() {
        let ids: Vec<MessageId> = [52001, 52002]
            .into_iter()
            .map(|i| MessageId::new(i).unwrap())
            .collect();
        assert_eq!(encode_post_body(&ids, &[]), "acklist=%5B52001%2C52002%5D");
        assert_eq!(encode_post_body(&[], &[]), "acklist=%5B%5D");
    }

    #[test]
    fn results_decode_with_unknown_statuses() {
        let r = decode_post_response(
            br#"{"messages": [{"id": 1, "status": "OK", "text": ""}, {"id": 2, "status": "MAYBE"}]}"#,
        )
        .unwrap();
        assert_eq!(r[0].status, InboundStatus::Ok);
        assert_eq!(r[1].status, InboundStatus::Unknown);
        assert!(decode_post_response(b"[]").is_err());
    }
}
