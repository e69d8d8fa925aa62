//! What both HTTP listeners share: accepting with back-off on errors.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The next connection, or `None` once `stop` fires. Accept errors (EMFILE when the process
/// is out of descriptors, ENFILE, ENOBUFS, …) are retried with a growing pause instead of a
/// busy loop, and logged once per run of failures.
pub(crate) async fn accept(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    what: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut errors = 0u32;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok(a) => {
                if errors > 0 {
                    tracing::info!(listener = what, failures = errors, "accepting works again");
                }
                return Some(a);
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                if errors == 1 {
                    tracing::warn!(listener = what, error = %e, "accept failed; backing off");
                }
                let pause = Duration::from_millis(10u64 << errors.min(7));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}
