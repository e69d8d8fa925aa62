//! Subscribes to user, handset and subscription-mode events and prints them until Ctrl-C
//! (or, with `--sim`, after a short scripted scenario).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line demo

use std::time::Duration;

use omm_axi::{Subscription, SubscriptionMode};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("omm_watch: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let target = hexidian_examples::target().await?;
    let (client, connection, mut events) = omm_axi::connect(&target.config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let conn = tokio::spawn(connection);
    client
        .subscribe(&Subscription::provisioning())
        .await
        .map_err(|e| e.to_string())?;
    println!("subscribed; waiting for events");
    if let Some(sim) = &target.sim {
        // play a handset subscribing during open registration
        client
            .set_subscription_mode(SubscriptionMode::Wildcard, Some(2))
            .await
            .map_err(|e| e.to_string())?;
        let ppn = sim
            .handset_subscribe("01842 0093371 6", "0000")
            .map_err(|e| format!("{e:?}"))?;
        println!("(simulated handset subscribed as ppn {ppn})");
    }
    let stop = async {
        if target.sim.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => println!("event: {ev:?}"),
                None => break,
            },
            () = &mut stop => break,
        }
    }
    drop(client);
    conn.await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connection: {e}"))
}
