//! Status stream clients that connect and never read cost the real process no memory: each
//! is dropped once its connection takes no more events, and what it was sent stays bounded.

use std::time::{Duration, Instant};

use hexidian_e2e::{World, sample};
use tokio::io::AsyncWriteExt;

use crate::support::{BIN, Hexidian, write_config};

const STUCK_CLIENTS: usize = 8;

/// Every extension gets a new name: one message each, announced on GURU3's websocket.
fn edit_all(w: &World, round: usize) {
    for e in w.guru3.extensions() {
        w.guru3
            .edit(&e.number, |e| {
                e.name = format!("Round {round} {}", e.number)
            })
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_clients_that_never_read_are_dropped_and_memory_stays_flat() {
    let w = World::new().await;
    hexidian_demo::seed(&w.guru3, 2000).unwrap();
    let dir = std::env::temp_dir().join(format!("hexidian-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&w, &dir);
    let c = Hexidian::spawn(BIN, &w, &config, None);
    let admin = c.admin().await;
    w.drained(Duration::from_secs(180)).await;
    // one round of edits without clients: what the process holds after the work itself
    edit_all(&w, 0);
    w.drained(Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = c.rss_kb();

    let mut stuck = Vec::new();
    for _ in 0..STUCK_CLIENTS {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(admin).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        stuck.push(s);
    }
    // two more rounds: some 4,000 message events each of them is sent and never reads
    for round in 1..=2 {
        edit_all(&w, round);
        w.drained(Duration::from_secs(180)).await;
    }
    let t0 = Instant::now();
    let text = loop {
        let (_, text) = hexidian_e2e::http_get(admin, "/metrics").await;
        if sample(&text, "hexidian_stream_dropped_total") >= Some(STUCK_CLIENTS as f64) {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "clients that do not read were not all dropped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&text, "hexidian_stream_clients"), Some(0.0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = c.rss_kb();
    eprintln!(
        "RSS before the clients {} kB, after {} edits sent to {STUCK_CLIENTS} clients that \
         never read {} kB",
        before,
        2 * w.guru3.extensions().len(),
        after
    );
    // unbounded, each client would hold every event it was sent (about 1 MB each)
    assert!(
        after < before + 4 * 1024,
        "memory grew from {before} kB to {after} kB"
    );
    drop(stuck);
    c.kill9().await;
    let _ = std::fs::remove_dir_all(&dir);
}
