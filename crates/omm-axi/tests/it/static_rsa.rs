//! The OpenSSL backend (feature `openssl`) against the simulator's listener that behaves like an
//! older firmware (TLS 1.2, `TLS_RSA_WITH_AES_256_GCM_SHA384` only): it connects, logs in and
//! provisions a user; the certificate checks behave as the rustls backend's.

use std::time::Duration;

use omm_axi::client::openssl_tls::{MinProtocol, OpensslTls};
use omm_axi::client::{Config, connect};
use omm_axi::proto::PpUser;
use omm_axi::{Error, Fingerprint};
use omm_axi_sim::Sim;

fn pin(stem: &str) -> Fingerprint {
    hexidian_testkit::fingerprint_hex(stem).parse().unwrap()
}

fn legacy(sim: &Sim, tls: OpensslTls) -> Config {
    Config::new("127.0.0.1", "omm", "omm")
        .port(sim.static_rsa_addr().port())
        .openssl(tls)
}

fn openssl_error(e: &Error) -> &str {
    match e {
        Error::OpensslTls(text) => text,
        other => panic!("not an OpenSSL TLS error: {other:?}"),
    }
}

#[tokio::test]
async fn the_openssl_backend_reaches_a_static_rsa_omm_and_provisions_a_user() {
    hexidian_testkit::init_tracing();
    let sim = Sim::start().await;
    let (client, conn, _events) =
        connect(&legacy(&sim, OpensslTls::pinned(&[pin("omm-selfsigned")])))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut u = PpUser::default();
    u.name = Some("Grace Hopper".into());
    u.num = Some("4711".into());
    let created = client.create_user(u).await.unwrap();
    assert_eq!(created.num.as_deref(), Some("4711"));
    let view = sim
        .wait_for(Duration::from_secs(10), |v| v.user_by_num("4711").is_some())
        .await
        .unwrap();
    let (_, attrs) = view.user_by_num("4711").unwrap();
    assert_eq!(attrs.get("name").map(String::as_str), Some("Grace Hopper"));
    // the password crossed the link encrypted: the simulator logs it masked
    assert!(
        view.requests("Open")
            .all(|r| r.attr("password") == Some("<masked>"))
    );
}

#[tokio::test]
async fn pinning_and_chain_checks_work_as_on_the_rustls_backend() {
    let sim = Sim::start().await;
    // a pin of another certificate
    let e = connect(&legacy(&sim, OpensslTls::pinned(&[pin("server")])))
        .await
        .unwrap_err();
    assert!(
        openssl_error(&e).contains("not one of the pinned fingerprints"),
        "{e}"
    );
    // the self-signed certificate does not chain to the test CA
    let ca = std::fs::read(hexidian_testkit::fixtures_dir().join("tls/ca.pem")).unwrap();
    let e = connect(&legacy(&sim, OpensslTls::with_ca_pem(&ca).unwrap()))
        .await
        .unwrap_err();
    assert!(openssl_error(&e).contains("refused"), "{e}");
    // the CA-issued certificate of the modern listener does, for 127.0.0.1
    let modern = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .openssl(OpensslTls::with_ca_pem(&ca).unwrap());
    let (c, conn, _e) = connect(&modern).await.unwrap();
    tokio::spawn(conn);
    c.ping().await.unwrap();
    // … but not for another address it was not issued for
    let wrong_name = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .server_name("omm.example.org")
        .openssl(OpensslTls::with_ca_pem(&ca).unwrap());
    let e = connect(&wrong_name).await.unwrap_err();
    assert!(openssl_error(&e).contains("refused"), "{e}");
    // and a pin works on the modern listener too
    let pinned = Config::new("127.0.0.1", "omm", "omm")
        .port(sim.addr().port())
        .openssl(OpensslTls::pinned(&[pin("server")]));
    let (c, conn, _e) = connect(&pinned).await.unwrap();
    tokio::spawn(conn);
    c.ping().await.unwrap();
}

#[tokio::test]
async fn the_minimum_protocol_and_the_cipher_list_are_honoured() {
    let sim = Sim::start().await;
    let pinned = || OpensslTls::pinned(&[pin("omm-selfsigned")]);
    // the old firmware speaks TLS 1.2 at most
    let e = connect(&legacy(&sim, pinned().min_protocol(MinProtocol::Tls1_3)))
        .await
        .unwrap_err();
    assert!(openssl_error(&e).contains("handshake"), "{e}");
    // forward-secret suites only: nothing in common with it
    let e = connect(&legacy(
        &sim,
        pinned().ciphers("ECDHE-RSA-AES256-GCM-SHA384"),
    ))
    .await
    .unwrap_err();
    assert!(openssl_error(&e).contains("handshake"), "{e}");
    let (c, conn, _e) = connect(&legacy(&sim, pinned().ciphers("AES256-GCM-SHA384")))
        .await
        .unwrap();
    tokio::spawn(conn);
    c.ping().await.unwrap();
}
