//! Progress of a long operator command, on standard error (standard output stays the
//! result): on a terminal a bar redrawn in place, otherwise (a pipe, a log) a plain line every
//! few seconds.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Width of the bar in characters.
const WIDTH: usize = 30;

pub(crate) struct Progress {
    what: &'static str,
    total: Option<u64>,
    done: u64,
    tty: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// `total`: how many steps there will be, if known.
    pub(crate) fn new(what: &'static str, total: Option<u64>) -> Self {
        Self {
            what,
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// `n` more steps done.
    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.drawn.is_none_or(|t| t.elapsed() >= every) {
            self.draw();
        }
    }

    /// The last state, and the end of the bar's line.
    pub(crate) fn finish(mut self) {
        self.draw();
        if self.tty {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }

    fn line(&self) -> String {
        match self.total {
            Some(t) if self.tty => {
                let filled = if t == 0 {
                    WIDTH
                } else {
                    (self.done.min(t) as usize * WIDTH) / t as usize
                };
                format!(
                    "{} [{}{}] {}/{t}",
                    self.what,
                    "#".repeat(filled),
                    " ".repeat(WIDTH - filled),
                    self.done
                )
            }
            Some(t) => format!("{}: {}/{t}", self.what, self.done),
            None => format!("{}: {}", self.what, self.done),
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        let text = if self.tty {
            format!("\r{}", self.line())
        } else {
            format!("{}\n", self.line())
        };
        // a progress line that cannot be written is no reason to fail the command
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_steps_and_never_overflows() {
        let mut p = Progress::new("replaying", Some(4));
        p.tty = true;
        p.done = 1;
        assert_eq!(
            p.line(),
            format!("replaying [{}{}] 1/4", "#".repeat(7), " ".repeat(23))
        );
        p.done = 9;
        assert_eq!(p.line(), format!("replaying [{}] 9/4", "#".repeat(30)));
        p.tty = false;
        assert_eq!(p.line(), "replaying: 9/4");
        let p = Progress::new("reading the OMM's users", None);
        assert_eq!(p.line(), "reading the OMM's users: 0");
    }
}
