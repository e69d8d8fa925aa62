//! hexidian in its default build (rustls only) against an OMM that offers nothing but static-RSA
//! TLS (the simulator's listener like an older firmware; this crate's feature `static-rsa-sim`):
//! `hexidian omm users` fails with an error that names the cipher problem and the way out, and
//! a config asking for the OpenSSL backend names the feature this build lacks. (The OpenSSL
//! backend itself: crates/omm-axi/tests/it/static_rsa.rs and packaging/check-deb.sh.)

use hexidian::ops::OmmList;
use omm_axi_sim::Sim;

fn config(dir: &std::path::Path, sim: &Sim, extra: &str) -> std::path::PathBuf {
    let example = hexidian_testkit::fixtures_dir().join("../examples/hexidian.toml");
    let pw = dir.join("omm-password");
    std::fs::write(&pw, "omm").unwrap();
    let text = std::fs::read_to_string(example).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let line = match line {
            l if l.starts_with("host = ") => "host = \"127.0.0.1\"".to_owned(),
            "# port = 12622" => format!("port = {}\n{extra}", sim.static_rsa_addr().port()),
            l if l.starts_with("user = ") => "user = \"omm\"".to_owned(),
            l if l.starts_with("password_file = ") => format!("password_file = {pw:?}"),
            l if l.starts_with("fingerprints = ") => format!(
                "fingerprints = [\"{}\"]",
                hexidian_testkit::fingerprint_hex("omm-selfsigned")
            ),
            l => l.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join(format!("hexidian-{}.toml", extra.len()));
    std::fs::write(&path, out).unwrap();
    path
}

#[tokio::test]
async fn the_default_build_names_the_cipher_problem_and_the_way_out() {
    let sim = Sim::start().await;
    let dir = std::env::temp_dir().join(format!("hexidian-static-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = hexidian::ops::omm(&config(&dir, &sim, ""), OmmList::Users, false)
        .await
        .unwrap_err();
    for want in [
        "static-RSA",
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        "`openssl`",
        "tls_backend = \"openssl\"",
    ] {
        assert!(e.contains(want), "{want:?} missing from: {e}");
    }
    let e = hexidian::ops::omm(
        &config(&dir, &sim, "tls_backend = \"openssl\""),
        OmmList::Users,
        false,
    )
    .await
    .unwrap_err();
    assert!(e.contains("built without the OpenSSL backend"), "{e}");
    assert!(e.contains("--features openssl"), "{e}");
    // the simulator served nobody: no session was opened
    assert_eq!(sim.view().requests("Open").count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
