//! Throughput of the protocol core and of request round trips against the simulator.
//!
//! `cargo bench -p omm-axi --bench throughput` prints one line per measurement.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary: reports on stdout, fails loudly

use std::hint::black_box;
use std::time::{Duration, Instant};

use omm_axi::client::{Config, connect, tls};
use omm_axi::proto::{FrameBuffer, Message, PpUser, Request};
use omm_axi::{Fingerprint, Uid};

fn rate(label: &str, n: u64, bytes: u64, elapsed: Duration) {
    let s = elapsed.as_secs_f64();
    if bytes > 0 {
        println!(
            "{label:<44} {:>12.0} msgs/s {:>8.1} MB/s",
            n as f64 / s,
            bytes as f64 / s / 1e6
        );
    } else {
        println!("{label:<44} {:>12.0} msgs/s", n as f64 / s);
    }
}

fn page_of_users() -> Vec<u8> {
    let mut doc = String::from("<GetPPUserResp seq=\"7\">");
    for uid in 1..=20 {
        doc.push_str(&format!(
            "<user uid=\"{uid}\" relType=\"Dynamic\" ppn=\"{uid}\" timeStamp=\"1732270010\" name=\"User {uid}\" num=\"{}\" hierarchy1=\"HEXIDIAN\" hierarchy2=\"05704191\" addId=\"{}\" pin=\"{}\" sipAuthId=\"{}\" sipPw=\"{}\" credentialPw=\"{}\" serviceAuthPassword=\"{}\" lang=\"English\" forwardState=\"Off\" forwardTime=\"0\" forwardDest=\"\" holdRingBackTime=\"3\" autoAnswer=\"Global\" microphoneMute=\"Global\" warningTone=\"Global\" allowBargeIn=\"Global\" callWaitingDisabled=\"0\" external=\"0\" trackingActive=\"0\" locatable=\"0\" BTlocatable=\"0\" locRight=\"0\" msgRight=\"1\" sendVcardRight=\"1\" recvVcardRight=\"0\" keepLocalPB=\"0\" vip=\"0\" sipRegisterCheck=\"0\" allowVideoStream=\"0\" BTsensitivity=\"high\" conferenceServerType=\"Global\" monitoringMode=\"Off\" CUS=\"Unknown\" HAS=\"Unknown\" HSS=\"Unknown\" HRS=\"Unknown\" HCS=\"Unknown\" SRS=\"Unknown\" SCS=\"Unknown\" CDS=\"Unknown\" HBS=\"Unknown\" BTS=\"Unknown\" SWS=\"Unknown\" ppData=\"\" fixedSipPort=\"0\" calculatedSipPort=\"5060\"/>",
            2000 + uid, 2000 + uid, "A".repeat(88), 2000 + uid, "B".repeat(88), "C".repeat(88), "D".repeat(88)
        ));
    }
    doc.push_str("</GetPPUserResp>");
    doc.into_bytes()
}

fn bench_decode() {
    let page = page_of_users();
    let event = br#"<EventPPCnf><pp ppn="12" uid="0" relType="Unbound" ipei="03074 0220259 3" ac="" s="Yes" uak="4F0C5E1A9B2D3C4E5F60718293A4B5C6" encrypt="0" autoCreate="1" hwType="Unknown" timeStamp="1732270000"/></EventPPCnf>"#;
    for (label, doc, n) in [
        (
            "decode GetPPUserResp (20 users, typed)",
            &page[..],
            2_000u64,
        ),
        ("decode EventPPCnf (typed)", &event[..], 200_000),
    ] {
        let start = Instant::now();
        for _ in 0..n {
            let msg = Message::decode(black_box(doc)).unwrap();
            if let Message::Response(r) = &msg {
                black_box(r.users().unwrap());
            }
            black_box(msg);
        }
        rate(label, n, n * doc.len() as u64, start.elapsed());
    }
    // framing alone: many frames per read, 1 KiB reads
    let mut stream = Vec::new();
    for _ in 0..20_000 {
        stream.extend_from_slice(event);
        stream.push(0);
    }
    let start = Instant::now();
    let mut fb = FrameBuffer::default();
    let mut frames = 0u64;
    for chunk in stream.chunks(1024) {
        fb.push(chunk);
        while let Some(f) = fb.pop() {
            black_box(f.unwrap());
            frames += 1;
        }
    }
    rate(
        "framing (1 KiB reads)",
        frames,
        stream.len() as u64,
        start.elapsed(),
    );
}

fn bench_encode() {
    let n = 200_000u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    for i in 0..n {
        let mut u = PpUser::default();
        u.uid = Some(Uid::new(i as u32 + 1));
        u.name = Some("K\u{f6}nig \"Stage\" <3>".into());
        u.num = Some("4711".into());
        u.hierarchy2 = Some("05704191".into());
        let b = Request::set_pp_user(u)
            .encode(Some(i as u32 + 1), None)
            .unwrap();
        bytes += b.len() as u64;
        black_box(b);
    }
    rate("encode SetPPUser", n, bytes, start.elapsed());
}

async fn bench_round_trips() {
    let sim = omm_axi_sim::Sim::start().await;
    for i in 0..64 {
        sim.seed_user(&[("num", &format!("{}", 3000 + i)), ("name", "Bench")]);
    }
    let fp: Fingerprint = hexidian_testkit::fingerprint_hex("server").parse().unwrap();
    let cfg = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .tls(tls::pinned(&[fp]));
    let (client, conn, _events) = connect(&cfg).await.unwrap();
    tokio::spawn(conn);
    let total = 20_000u32;
    for in_flight in [1u32, 64] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..in_flight {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..total / in_flight {
                    let uid = Uid::new((t * 7 + i) % 64 + 1);
                    black_box(c.fetch_user(uid).await.unwrap());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        rate(
            &format!("GetPPUser round trips over TLS, {in_flight} in flight"),
            u64::from(total),
            0,
            start.elapsed(),
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    bench_decode();
    bench_encode();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench_round_trips());
}
