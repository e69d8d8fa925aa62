//! Lists every user and handset of an OMM.
//!
//! `cargo run -p hexidian-examples --bin omm_list -- --sim`, or with `OMM_HOST`, `OMM_USER`,
//! `OMM_PASSWORD`, `OMM_FINGERPRINT` set for a real OMM.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line demo

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("omm_list: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let target = hexidian_examples::target().await?;
    let (client, connection, _events) = omm_axi::connect(&target.config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(connection);
    println!(
        "system: {}",
        client
            .fetch_system_name()
            .await
            .map_err(|e| e.to_string())?
    );
    let users = client.list_users().await.map_err(|e| e.to_string())?;
    println!("{} users", users.len());
    for u in &users {
        println!(
            "  uid {:>5}  num {:<8} ppn {:>5}  {}",
            u.uid(),
            u.num.as_deref().unwrap_or(""),
            u.bound_ppn(),
            u.name.as_deref().unwrap_or("")
        );
    }
    let devices = client.list_devices().await.map_err(|e| e.to_string())?;
    println!("{} devices", devices.len());
    for d in &devices {
        let ipei = d.ipei.map(|i| i.to_string()).unwrap_or_default();
        println!(
            "  ppn {:>5}  ipei {ipei:<15}  uid {:>5}  subscribed {:?}",
            d.ppn(),
            d.bound_uid(),
            d.s
        );
    }
    Ok(())
}
