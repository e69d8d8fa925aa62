//! `hexidian omm users|devices|handset IPEI`: what the OMM holds, each user marked owned
//! (hexidian's user of an extension), temporary (hexidian's user of a handset without one) or
//! foreign (never touched). Opens its own OM AXI session with the config's account and reads
//! every user and device (paged); writes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use omm_axi::{PpDevice, PpUser};
use omm_provision::{Owner, Tags};

use super::printable;
use crate::adapters::{OWNER_TAG, TEMP_TAG};
use crate::config::FileConfig;

/// What to list.
#[derive(Debug, Clone)]
pub enum OmmList {
    /// Every user.
    Users,
    /// Every device (handset).
    Devices,
    /// One handset by IPEI, with its user.
    Handset(String),
}

/// Requests in flight while paging through users and devices.
const DEPTH: usize = 8;

/// Users by uid and devices by ppn, as the OMM holds them now.
pub(super) struct Snapshot {
    pub(super) users: BTreeMap<u32, PpUser>,
    pub(super) devices: BTreeMap<u32, PpDevice>,
}

impl Snapshot {
    /// Every user with its owner and bound handset, as the broker's map would hold it.
    pub(super) fn views(&self) -> Vec<omm_provision::UserView> {
        self.users
            .values()
            .map(|u| omm_provision::UserView {
                uid: u.uid.map_or(0, |x| x.get()),
                number: u.num.clone().unwrap_or_default(),
                name: u.name.clone().unwrap_or_default(),
                owner: owner(u),
                ipei: u
                    .ppn
                    .and_then(|p| self.devices.get(&p.get()))
                    .and_then(|d| d.ipei),
            })
            .collect()
    }
}

/// Reads every user and device of the OMM of the config file (its own session, paged).
pub(super) async fn read(path: &Path) -> Result<Snapshot, String> {
    let file = FileConfig::load(path)?;
    file.check_transports()?;
    let cfg = file.omm_config()?;
    let (client, conn, _events) = omm_axi::connect(&cfg)
        .await
        .map_err(|e| format!("omm at {}: {e}", file.omm.host))?;
    let task = tokio::spawn(conn);
    let mut users = BTreeMap::new();
    let mut devices = BTreeMap::new();
    let r = async {
        let mut progress = super::progress::Progress::new("reading the OMM's users", None);
        client
            .scan_users(DEPTH, |page| {
                progress.add(page.len() as u64);
                users.extend(page.into_iter().filter_map(|u| Some((u.uid?.get(), u))));
            })
            .await?;
        progress.finish();
        let mut progress = super::progress::Progress::new("reading the OMM's devices", None);
        client
            .scan_devices(DEPTH, |page| {
                progress.add(page.len() as u64);
                devices.extend(page.into_iter().filter_map(|d| Some((d.ppn?.get(), d))));
            })
            .await?;
        progress.finish();
        Ok::<_, omm_axi::Error>(())
    }
    .await;
    drop(client);
    task.abort();
    r.map_err(|e| format!("omm: {e}"))?;
    Ok(Snapshot { users, devices })
}

pub(super) fn owner(u: &PpUser) -> Owner {
    Tags::new(OWNER_TAG, TEMP_TAG).owner_of(u.hierarchy1.as_deref(), u.hierarchy2.as_deref())
}

fn text(s: Option<&str>) -> String {
    s.map_or_else(|| "-".into(), printable)
}

/// `hexidian omm …`: the list as a table or (`json`) one JSON array.
pub async fn omm(path: &Path, what: OmmList, json: bool) -> Result<String, String> {
    let snap = read(path).await?;
    render(&snap, &what, json)
}

fn user_json(u: &PpUser, snap: &Snapshot) -> serde_json::Value {
    let device = u.ppn.and_then(|p| snap.devices.get(&p.get()));
    serde_json::json!({
        "uid": u.uid.map(|x| x.get()), "number": u.num, "name": u.name,
        "owner": owner(u).as_str(), "ppn": u.ppn.map(|x| x.get()),
        "ipei": device.and_then(|d| d.ipei).map(|i| i.to_string()),
    })
}

fn device_json(d: &PpDevice, snap: &Snapshot) -> serde_json::Value {
    let user = d.uid.and_then(|u| snap.users.get(&u.get()));
    serde_json::json!({
        "ppn": d.ppn.map(|x| x.get()), "ipei": d.ipei.map(|i| i.to_string()),
        "subscribed": d.s.as_ref().map(ToString::to_string),
        "encrypt": d.encrypt,
        "uid": d.uid.map(|x| x.get()),
        "number": user.and_then(|u| u.num.clone()),
        "owner": user.map(|u| owner(u).as_str()),
    })
}

fn render(snap: &Snapshot, what: &OmmList, json: bool) -> Result<String, String> {
    match what {
        OmmList::Users => {
            let mut users: Vec<&PpUser> = snap.users.values().collect();
            users.sort_by(|a, b| a.num.cmp(&b.num));
            if json {
                let rows: Vec<_> = users.iter().map(|u| user_json(u, snap)).collect();
                return Ok(format!("{}\n", serde_json::Value::Array(rows)));
            }
            let mut out = format!(
                "{:<12} {:<20} {:>8} {:<10} {}\n",
                "NUMBER", "NAME", "UID", "OWNER", "HANDSET"
            );
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for u in &users {
                let v = user_json(u, snap);
                *counts.entry(owner(u).as_str()).or_default() += 1;
                out.push_str(&format!(
                    "{:<12} {:<20} {:>8} {:<10} {}\n",
                    text(u.num.as_deref()),
                    text(u.name.as_deref()),
                    v["uid"].to_string(),
                    owner(u).as_str(),
                    text(v["ipei"].as_str())
                ));
            }
            out.push_str(&summary(users.len(), "user", &counts));
            Ok(out)
        }
        OmmList::Devices => {
            if json {
                let rows: Vec<_> = snap
                    .devices
                    .values()
                    .map(|d| device_json(d, snap))
                    .collect();
                return Ok(format!("{}\n", serde_json::Value::Array(rows)));
            }
            let mut out = format!(
                "{:>8} {:<16} {:<12} {:<12} {}\n",
                "PPN", "IPEI", "SUBSCRIBED", "NUMBER", "OWNER"
            );
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for d in snap.devices.values() {
                let v = device_json(d, snap);
                let who = d
                    .uid
                    .and_then(|u| snap.users.get(&u.get()))
                    .map_or("no user", |u| owner(u).as_str());
                *counts.entry(who).or_default() += 1;
                out.push_str(&format!(
                    "{:>8} {:<16} {:<12} {:<12} {}\n",
                    v["ppn"].to_string(),
                    text(v["ipei"].as_str()),
                    text(v["subscribed"].as_str()),
                    text(v["number"].as_str()),
                    who
                ));
            }
            out.push_str(&summary(snap.devices.len(), "device", &counts));
            Ok(out)
        }
        OmmList::Handset(ipei) => {
            let want: omm_axi::Ipei = ipei
                .parse()
                .map_err(|e| format!("IPEI {ipei:?}: {e} (expected `DDDDD DDDDDDD C`)"))?;
            let Some(d) = snap.devices.values().find(|d| d.ipei == Some(want)) else {
                return Err(format!("the OMM has no handset {want}"));
            };
            let mut v = device_json(d, snap);
            let user = d.uid.and_then(|u| snap.users.get(&u.get()));
            v["user"] = user.map_or(serde_json::Value::Null, |u| user_json(u, snap));
            if json {
                return Ok(format!("{v}\n"));
            }
            let mut out = format!(
                "handset {want}: ppn {}, subscribed {}, encryption {}\n",
                v["ppn"],
                text(v["subscribed"].as_str()),
                match d.encrypt {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "-",
                }
            );
            match user {
                Some(u) => out.push_str(&format!(
                    "user: {} {:?} (uid {}), {}\n",
                    text(u.num.as_deref()),
                    printable(u.name.as_deref().unwrap_or("")),
                    v["uid"],
                    match owner(u) {
                        Owner::Owned => "owned by hexidian",
                        Owner::Temporary => "hexidian's temporary user: dial a token to bind it",
                        Owner::Foreign => "foreign: hexidian never changes it",
                    }
                )),
                None => out.push_str("user: none (hexidian gives it a temporary number)\n"),
            }
            Ok(out)
        }
    }
}

fn summary(n: usize, what: &str, counts: &BTreeMap<&str, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!("{n} {what}(s): {}\n", parts.join(", "))
}
