//! Attaches a handset to a user: `omm_attach <ppn> <user number>` (or, with `--sim` and no
//! arguments, the first seeded handset to number 2001). Detaches the handset from any previous
//! user first.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line demo

use omm_axi::{Ppn, RelType};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("omm_attach: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let target = hexidian_examples::target().await?;
    let args = hexidian_examples::positional();
    let (ppn, num) = match (args.first(), args.get(1), &target.sim) {
        (Some(p), Some(n), _) => (p.parse::<Ppn>().map_err(|e| e.to_string())?, n.clone()),
        (None, None, Some(_)) => (Ppn::new(1), "2001".to_owned()),
        _ => return Err("usage: omm_attach <ppn> <user number>".into()),
    };
    let (client, connection, _events) = omm_axi::connect(&target.config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(connection);
    let user = client
        .fetch_user_by_number(&num)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user with number {num}"))?;
    let device = client
        .fetch_device(ppn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no handset {ppn}"))?;
    if !device.bound_uid().is_none() && device.bound_uid() != user.uid() {
        client
            .detach(ppn, device.bound_uid())
            .await
            .map_err(|e| e.to_string())?;
        println!("detached ppn {ppn} from uid {}", device.bound_uid());
    }
    let (dev, usr) = client
        .attach(ppn, user.uid(), RelType::Dynamic)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "attached ppn {} to uid {} (number {}), relation {:?}",
        dev.ppn(),
        usr.uid(),
        num,
        dev.rel_type
    );
    Ok(())
}
