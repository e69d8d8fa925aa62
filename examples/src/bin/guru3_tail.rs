//! Tails the message queue of a GURU3 event, read-only: prints every message once, acks
//! nothing. Against a real GURU3: `GURU3_URL` (https://…), `GURU3_KEY` (the event's mgr key,
//! `<event>$<secret>`), optional `GURU3_CA` (PEM file of an extra CA). With `--sim`, an
//! embedded simulator with a few extensions is tailed while a scripted user edits them.
//!
//! Since nothing is acked, GURU3 keeps returning the oldest messages: the page size is large
//! and ids already shown are skipped.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line demo

use std::collections::HashSet;
use std::time::Duration;

use guru3_client::client::{Client, Config, FeedConfig, feed, tls};
use guru3_client::{ApiKey, Message};
use guru3_sim::Guru3Sim;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("guru3_tail: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let sim = std::env::args().any(|a| a == "--sim");
    let (config, sim) = if sim {
        let sim = Guru3Sim::start(guru3_sim::Config::default())
            .await
            .map_err(|e| e.to_string())?;
        guru3_sim::seed_example(&sim)?;
        let key: ApiKey = sim.api_key().parse().map_err(|e| format!("{e}"))?;
        let config = Config::new(&sim.url(), key)
            .map_err(|e| e.to_string())?
            .tls(tls::with_roots(hexidian_testkit::ca_roots()));
        (config, Some(sim))
    } else {
        #[allow(clippy::disallowed_methods)] // examples read their settings from the environment
        let var = |k: &str| std::env::var(k).map_err(|_| format!("set {k} (or pass --sim)"));
        let key: ApiKey = var("GURU3_KEY")?
            .parse()
            .map_err(|e| format!("GURU3_KEY: {e}"))?;
        let mut config = Config::new(&var("GURU3_URL")?, key).map_err(|e| e.to_string())?;
        if let Ok(path) = var("GURU3_CA") {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect())
                .map_err(|e| format!("GURU3_CA {path}: {e}"))?;
            let (roots, added) = tls::webpki_roots_and(certs);
            if added == 0 {
                return Err(format!("GURU3_CA {path}: no usable certificate"));
            }
            config = config.tls(tls::with_roots(roots));
        }
        (config, None)
    };
    let client = Client::new(config.max_messages(1000)).map_err(|e| e.to_string())?;
    println!("tailing event {} (read-only)", client.event_id());
    let (mut feed, watcher) = feed(client, FeedConfig::default());
    tokio::spawn(watcher.run());
    let mut seen = HashSet::new();
    let mut shown = 0usize;
    loop {
        let page = tokio::select! {
            p = feed.next_page() => p,
            () = stop(sim.is_some(), shown) => break,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fetch failed: {e}");
                continue;
            }
        };
        for raw in page.messages.iter().filter(|m| seen.insert(m.id)) {
            shown += 1;
            match raw.decode() {
                Ok(Message::Unknown { kind, .. }) => println!("{} unknown type {kind:?}", raw.id),
                Ok(m) => println!("{} {m}", raw.id),
                Err(e) => println!("{} malformed: {e}", raw.id),
            }
        }
        for m in &page.malformed {
            println!("not an envelope: {m}");
        }
        if let (Some(sim), 4) = (&sim, shown) {
            // a user renames the kiosk while we watch
            sim.rename("2002", "2020")?;
        }
    }
    println!("{shown} messages shown, none acked");
    Ok(())
}

/// With the simulator: stop once the scripted rename has been shown; otherwise on Ctrl-C.
async fn stop(sim: bool, shown: usize) {
    if sim {
        if shown >= 6 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
}
