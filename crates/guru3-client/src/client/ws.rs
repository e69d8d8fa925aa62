//! The `/status/stream/` websocket: `messagecount` hints (spec §4).

use std::fmt;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::error::{Error, Result};

/// One `{"action": "messagecount", "queuelength": N}` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Undelivered messages of the event when the frame was made.
    pub queue_length: u64,
}

type Frames = Pin<Box<dyn Stream<Item = Result<Message, tungstenite::Error>> + Send>>;

/// An open notification stream. Pings are answered while [`next`](Self::next) is being polled,
/// so keep polling it.
pub struct Notifications {
    frames: Frames,
    last_activity: tokio::time::Instant,
}

impl fmt::Debug for Notifications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Notifications")
    }
}

impl Notifications {
    pub(crate) fn new<S>(ws: S) -> Self
    where
        S: Stream<Item = Result<Message, tungstenite::Error>> + Send + 'static,
    {
        Self {
            frames: Box::pin(ws),
            last_activity: tokio::time::Instant::now(),
        }
    }

    /// When the peer last sent anything (a frame of any kind, pings included): what a
    /// liveness timeout should look at.
    pub fn last_activity(&self) -> tokio::time::Instant {
        self.last_activity
    }

    /// The next `messagecount` frame; `None` once the server closed the stream. Frames that are
    /// not `messagecount` JSON are skipped (GURU3 sends no others).
    pub async fn next(&mut self) -> Option<Result<Notification>> {
        loop {
            let frame = self.frames.next().await?;
            self.last_activity = tokio::time::Instant::now();
            match frame {
                Ok(Message::Text(t)) => {
                    if let Some(n) = parse(t.as_str()) {
                        return Some(Ok(n));
                    }
                    tracing::debug!(frame = %t.as_str().chars().take(100).collect::<String>(), "ignoring websocket frame");
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => {} // ping/pong/binary: pongs are sent by tungstenite itself
                Err(tungstenite::Error::ConnectionClosed) => return None,
                Err(e) => return Some(Err(Error::Websocket(Box::new(e)))),
            }
        }
    }
}

fn parse(text: &str) -> Option<Notification> {
    #[derive(serde::Deserialize)]
    struct Frame {
        action: String,
        queuelength: u64,
    }
    let f: Frame = serde_json::from_str(text).ok()?;
    (f.action == "messagecount").then_some(Notification {
        queue_length: f.queuelength,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_from_any_stream() {
        let frames = vec![
            Ok(Message::text(
                r#"{"action": "messagecount", "queuelength": 18}"#,
            )),
            Ok(Message::Ping(vec![1].into())),
            Ok(Message::text("not json")),
            Ok(Message::text(r#"{"action": "other", "queuelength": 1}"#)),
            Ok(Message::text(
                r#"{"action": "messagecount", "queuelength": 0}"#,
            )),
            Ok(Message::Close(None)),
            Ok(Message::text(
                r#"{"action": "messagecount", "queuelength": 5}"#,
            )),
        ];
        let mut n = Notifications::new(futures_util::stream::iter(frames));
        assert_eq!(n.next().await.unwrap().unwrap().queue_length, 18);
        assert_eq!(n.next().await.unwrap().unwrap().queue_length, 0);
        assert!(n.next().await.is_none());
    }
}
