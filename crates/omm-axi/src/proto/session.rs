//! The session state machine: seq allocation, the pending-reply table with deadlines, login
//! state and event demultiplexing. Bytes and `now` go in; bytes to send, replies and events
//! come out. No I/O and no clock reads.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::error::{Error, ProtocolError};
use crate::proto::frame::FrameBuffer;
use crate::proto::message::{Event, Message, Request, Response};
use crate::secret::PublicKey;

/// What the session produced from received bytes.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output<T> {
    /// The reply (or failure) for the request registered with `token`.
    Reply {
        /// The caller's token for the request.
        token: T,
        /// Its sequence number.
        seq: u32,
        /// The response, or `Rejected` if it carried `errCode`, or a protocol error.
        result: Result<Response, Error>,
    },
    /// An unsolicited event.
    Event(Event),
    /// A frame that could not be used (malformed, uncorrelated). The stream continues.
    Malformed(ProtocolError),
}

#[derive(Debug)]
struct Pending<T> {
    token: T,
    response_name: String,
    deadline: Option<Instant>,
}

/// OM AXI session state for one link. `T` is the caller's per-request token (for the async
/// client: the channel that receives the reply).
#[derive(Debug)]
pub struct Session<T> {
    frames: FrameBuffer,
    next_seq: u32,
    pending: HashMap<u32, Pending<T>>,
    outputs: VecDeque<Output<T>>,
    key: Option<PublicKey>,
    logged_in: bool,
}

impl<T> Default for Session<T> {
    fn default() -> Self {
        Self::new(crate::proto::frame::DEFAULT_MAX_FRAME)
    }
}

impl<T> Session<T> {
    /// A fresh session; frames larger than `max_frame` bytes are rejected.
    pub fn new(max_frame: usize) -> Self {
        Self {
            frames: FrameBuffer::new(max_frame),
            next_seq: 1,
            pending: HashMap::new(),
            outputs: VecDeque::new(),
            key: None,
            logged_in: false,
        }
    }

    /// The OMM's public key, known after a successful `Open`.
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.key.as_ref()
    }

    /// Whether an `Open` succeeded on this link.
    pub fn is_logged_in(&self) -> bool {
        self.logged_in
    }

    /// Number of requests waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn alloc_seq(&mut self) -> u32 {
        loop {
            let seq = self.next_seq;
            self.next_seq = if self.next_seq >= (1 << 31) - 1 {
                1
            } else {
                self.next_seq + 1
            };
            if !self.pending.contains_key(&seq) {
                return seq;
            }
        }
    }

    /// Registers a request and returns its sequence number and bytes to send. On failure
    /// (a secret that cannot be encrypted) the token is handed back.
    pub fn send(
        &mut self,
        request: &Request,
        token: T,
        deadline: Option<Instant>,
    ) -> Result<(u32, Vec<u8>), (T, Error)> {
        let seq = self.alloc_seq();
        match request.encode(Some(seq), self.key.as_ref()) {
            Ok(bytes) => {
                let response_name = format!("{}Resp", request.name());
                self.pending.insert(
                    seq,
                    Pending {
                        token,
                        response_name,
                        deadline,
                    },
                );
                Ok((seq, bytes))
            }
            Err(e) => Err((token, e)),
        }
    }

    /// Feeds received bytes; complete frames are decoded into [`Output`]s.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
        while let Some(frame) = self.frames.pop() {
            let out = match frame.and_then(|f| Message::decode(&f)) {
                Ok(Message::Event(ev)) => Output::Event(ev),
                Ok(Message::Response(resp)) => match self.correlate(resp) {
                    Ok(out) => out,
                    Err(e) => Output::Malformed(e),
                },
                Err(e) => Output::Malformed(e),
            };
            self.outputs.push_back(out);
        }
    }

    fn correlate(&mut self, resp: Response) -> Result<Output<T>, ProtocolError> {
        let seq = match resp.seq() {
            Some(seq) if self.pending.contains_key(&seq) => seq,
            Some(_) => {
                return Err(ProtocolError::UnknownSeq {
                    name: resp.name().to_owned(),
                    seq: resp.raw_seq().map(str::to_owned),
                });
            }
            None => {
                // No seq: deliver to the single outstanding request that expects this name.
                let mut matching = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.response_name == resp.name());
                match (matching.next(), matching.next()) {
                    (Some((seq, _)), None) => *seq,
                    _ => {
                        return Err(ProtocolError::UnknownSeq {
                            name: resp.name().to_owned(),
                            seq: resp.raw_seq().map(str::to_owned),
                        });
                    }
                }
            }
        };
        let pending = self.pending.remove(&seq).expect("checked above");
        if pending.response_name != resp.name() {
            let err = ProtocolError::MismatchedResponse {
                expected: pending.response_name,
                got: resp.name().to_owned(),
                seq,
            };
            return Ok(Output::Reply {
                token: pending.token,
                seq,
                result: Err(Error::Protocol(err)),
            });
        }
        if resp.name() == "OpenResp" && resp.error().is_none() {
            match resp.public_key() {
                Ok(key) => {
                    self.key = Some(key);
                    self.logged_in = true;
                }
                Err(e) => {
                    return Ok(Output::Reply {
                        token: pending.token,
                        seq,
                        result: Err(Error::Protocol(e)),
                    });
                }
            }
        }
        if resp.name() == "GetPublicKeyResp" && resp.error().is_none() {
            if let Ok(key) = resp.public_key() {
                self.key = Some(key);
            }
        }
        Ok(Output::Reply {
            token: pending.token,
            seq,
            result: resp.into_result(),
        })
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<Output<T>> {
        self.outputs.pop_front()
    }

    /// The earliest request deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.deadline).min()
    }

    /// Removes every request whose deadline passed and returns it with a `Timeout` error.
    pub fn expire(&mut self, now: Instant) -> Vec<(T, Error)> {
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(s, _)| *s)
            .collect();
        expired
            .into_iter()
            .filter_map(|seq| {
                let p = self.pending.remove(&seq)?;
                let request = p.response_name.trim_end_matches("Resp").to_owned();
                Some((p.token, Error::Timeout { request, seq }))
            })
            .collect()
    }

    /// Drains every pending request (the link is gone).
    pub fn fail_all(&mut self) -> Vec<T> {
        self.pending.drain().map(|(_, p)| p.token).collect()
    }
}

/// Exponential back-off with jitter for reconnect loops (sans-IO: it only computes delays;
/// the caller sleeps); the workspace's one implementation, re-exported here.
pub use exp_backoff::Backoff;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Uid;
    use std::time::Duration;

    #[test]
    fn replies_correlate_by_seq_out_of_order() {
        let mut s: Session<&str> = Session::default();
        let (a, _) = s
            .send(&Request::get_pp_user(Uid::new(1), Some(1)), "a", None)
            .unwrap();
        let (b, _) = s
            .send(&Request::get_pp_user(Uid::new(2), Some(1)), "b", None)
            .unwrap();
        s.receive(format!("<GetPPUserResp seq=\"{b}\"/>\0<EventX/>\0<GetPPUserResp seq=\"{a}\" errCode=\"ENoEnt\"/>\0").as_bytes());
        assert!(matches!(
            s.poll_output(),
            Some(Output::Reply {
                token: "b",
                result: Ok(_),
                ..
            })
        ));
        assert!(matches!(
            s.poll_output(),
            Some(Output::Event(Event::Other(_)))
        ));
        match s.poll_output() {
            Some(Output::Reply {
                token: "a",
                result: Err(e),
                ..
            }) => assert_eq!(e.code().map(|c| c.as_str()), Some("ENoEnt")),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn mismatched_and_unknown_responses() {
        let mut s: Session<u8> = Session::default();
        let (seq, _) = s.send(&Request::ping(None), 1, None).unwrap();
        s.receive(
            format!("<LimitsResp seq=\"{seq}\"/>\0<PingResp seq=\"999\"/>\0<Open/>\0").as_bytes(),
        );
        assert!(matches!(
            s.poll_output(),
            Some(Output::Reply {
                result: Err(Error::Protocol(ProtocolError::MismatchedResponse { .. })),
                ..
            })
        ));
        assert!(matches!(
            s.poll_output(),
            Some(Output::Malformed(ProtocolError::UnknownSeq { .. }))
        ));
        assert!(matches!(
            s.poll_output(),
            Some(Output::Malformed(ProtocolError::UnexpectedMessage { .. }))
        ));
    }

    #[test]
    fn response_without_seq_goes_to_the_single_matching_request() {
        let mut s: Session<u8> = Session::default();
        s.send(&Request::ping(None), 1, None).unwrap();
        s.send(&Request::limits(), 2, None).unwrap();
        s.receive(b"<LimitsResp records=\"20\"/>\0");
        assert!(matches!(
            s.poll_output(),
            Some(Output::Reply {
                token: 2,
                result: Ok(_),
                ..
            })
        ));
    }

    #[test]
    fn deadlines_expire() {
        let now = Instant::now();
        let mut s: Session<u8> = Session::default();
        s.send(&Request::ping(None), 1, Some(now + Duration::from_secs(5)))
            .unwrap();
        s.send(&Request::ping(None), 2, Some(now + Duration::from_secs(10)))
            .unwrap();
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
        let expired = s.expire(now + Duration::from_secs(6));
        assert_eq!(expired.len(), 1);
        assert!(matches!(expired[0], (1, Error::Timeout { .. })));
        assert_eq!(s.fail_all(), vec![2]);
    }
}
