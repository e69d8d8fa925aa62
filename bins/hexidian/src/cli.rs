//! What the command-line binaries share: logging set-up and the shutdown signal.

/// Logs to stderr, `human` (default) or `json`; `RUST_LOG` sets the filter (default `info`).
/// ANSI colours only when stderr is a terminal. When stderr is systemd's journal (it says so in
/// `JOURNAL_STREAM`), human lines carry no timestamp (the journal stamps each line) and start
/// with the syslog priority (`<3>` for errors …), so `journalctl -p warning` filters them.
pub fn init_logging(format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == Some("json") {
        b.json().init();
    } else if stderr_is_journal() {
        b.event_format(Journal(
            tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false),
        ))
        .init();
    } else {
        b.init();
    }
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` names its
/// device and inode (a child that inherited the variable but writes elsewhere does not match).
pub fn stderr_is_journal() -> bool {
    #[allow(clippy::disallowed_methods)] // systemd's documented hand-over
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    journal_stream_matches(&v, std::fs::metadata("/proc/self/fd/2").ok())
}

fn journal_stream_matches(value: &str, stderr: Option<std::fs::Metadata>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    match (dev.parse::<u64>(), ino.parse::<u64>(), stderr) {
        (Ok(dev), Ok(ino), Some(m)) => m.dev() == dev && m.ino() == ino,
        _ => false,
    }
}

/// The syslog priority a journal line starts with.
fn priority(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "<3>",
        tracing::Level::WARN => "<4>",
        tracing::Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// The human format for the journal: priority prefix, no timestamp.
struct Journal<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journal<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled, so a signal that arrives early is not lost (or fatal).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_recognised_by_device_and_inode_only() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/").unwrap();
        let mine = format!("{}:{}", m.dev(), m.ino());
        assert!(journal_stream_matches(&mine, Some(m.clone())));
        let other = format!("{}:{}", m.dev(), m.ino() + 1);
        assert!(!journal_stream_matches(&other, Some(m.clone())));
        for bad in ["", "8", "x:y", "8:"] {
            assert!(!journal_stream_matches(bad, Some(m.clone())), "{bad}");
        }
        assert!(!journal_stream_matches(&mine, None));
        assert_eq!(priority(&tracing::Level::ERROR), "<3>");
        assert_eq!(priority(&tracing::Level::DEBUG), "<7>");
    }
}
