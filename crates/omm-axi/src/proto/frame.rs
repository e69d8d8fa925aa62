//! NUL framing: push bytes in any chunking, pop complete frames.

use crate::error::ProtocolError;

/// Default upper bound for one frame (a full page of 20 users is ~50–130 KB).
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Reassembles NUL-terminated OM AXI documents from a byte stream.
///
/// "Incomplete" (no NUL yet) and "malformed" (too large) are kept apart: [`pop`](Self::pop)
/// returns `None` for the first and an error for the second. After an oversize error the
/// buffer skips to the next NUL and continues with the frame after it.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// Bytes before this index were already searched for NUL.
    scanned: usize,
    max: usize,
    /// Dropping the rest of an oversize frame until its NUL.
    skipping: bool,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameBuffer {
    /// A buffer that rejects frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max: max.max(1),
            skipping: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a complete frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Pops the next complete frame (without its NUL). Empty frames (two NULs in a row) are
    /// skipped.
    pub fn pop(&mut self) -> Option<Result<Vec<u8>, ProtocolError>> {
        loop {
            match self.buf[self.scanned..].iter().position(|b| *b == 0) {
                Some(i) => {
                    let end = self.scanned + i;
                    let frame: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                    self.scanned = 0;
                    if std::mem::take(&mut self.skipping) || frame.is_empty() {
                        continue;
                    }
                    if frame.len() > self.max {
                        return Some(Err(ProtocolError::FrameTooLarge { max: self.max }));
                    }
                    return Some(Ok(frame));
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.max {
                        // Memory stays bounded: drop what we have and skip to the next NUL.
                        self.buf.clear();
                        self.scanned = 0;
                        if !std::mem::replace(&mut self.skipping, true) {
                            return Some(Err(ProtocolError::FrameTooLarge { max: self.max }));
                        }
                    }
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<Result<String, ProtocolError>> {
        let mut fb = FrameBuffer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            fb.push(c);
            while let Some(f) = fb.pop() {
                out.push(f.map(|v| String::from_utf8(v).unwrap()));
            }
        }
        out
    }

    #[test]
    fn decoder_handles_split_nul() {
        assert_eq!(
            frames(&[b"<a/", b">", b"\0<b/>\0"], 100),
            vec![Ok("<a/>".into()), Ok("<b/>".into())]
        );
        assert_eq!(frames(&[b"<a/>"], 100), vec![]);
        assert_eq!(frames(&[b"\0\0<a/>\0\0"], 100), vec![Ok("<a/>".into())]);
    }

    #[test]
    fn oversize_frame_is_skipped_and_stream_continues() {
        let big = [b'x'; 20];
        let got = frames(&[&big, &big, b"tail\0<ok/>\0"], 10);
        assert_eq!(
            got,
            vec![
                Err(ProtocolError::FrameTooLarge { max: 10 }),
                Ok("<ok/>".into())
            ]
        );
        let got = frames(&[b"0123456789abc\0<ok/>\0"], 10);
        assert_eq!(
            got,
            vec![
                Err(ProtocolError::FrameTooLarge { max: 10 }),
                Ok("<ok/>".into())
            ]
        );
    }
}
