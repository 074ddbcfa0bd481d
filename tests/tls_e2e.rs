//! TLS end to end, through the real `pigeon-broker` and `pigeon` binaries
//! and the client library, with certificates made in the test (rcgen):
//! produce and consume over TLS; a plain client, an unknown CA, an expired
//! certificate and a certificate for another host are refused with clear
//! errors; client certificates are required with `--tls-client-ca`; the
//! HTTP listener serves HTTPS only; a SIGHUP reload is picked up by new
//! connections while an established one keeps working.
//!
//! Every `pigeon` run is bounded; waits poll with a deadline.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pigeon_client::client::{Client, ClientConfig, ClientError, TlsConfig};
use pigeon_suite::pki::{Ca, Issued, https_get};
use pigeon_suite::process::{Output, pigeon_command, run};
use pigeon_suite::{Broker, runtime, wait_until};

/// Longest a single `pigeon` invocation may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn start(data: &Path, cert: &Issued, extra: &[&str]) -> Broker {
    let mut flags = cert.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Broker::start(data, &flags)
}

/// `pigeon --broker ADDR --tls-ca CA args...` with `stdin`.
fn pigeon(broker: &Broker, ca: Option<&Path>, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = pigeon_command(broker.addr);
    command.env_remove("PIGEON_TLS_CA");
    if let Some(ca) = ca {
        command.arg("--tls-ca").arg(ca);
    }
    command.args(args);
    run(command, stdin, RUN_TIMEOUT)
}

fn assert_ok(out: &Output) {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
}

/// Asserts a one-sentence failure containing `needle`.
fn assert_fails_with(out: &Output, needle: &str) {
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(out.stderr.starts_with("pigeon: "), "{}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn produce_and_consume_over_tls_and_https_health() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "main");
    let broker = start(&tmp.path().join("data"), &ca.broker("broker"), &[]);
    let ca_file = Some(ca.cert.as_path());
    assert_ok(&pigeon(
        &broker,
        ca_file,
        &["topic", "create", "orders"],
        b"",
    ));
    let produced = pigeon(&broker, ca_file, &["produce", "orders"], b"first\nsecond\n");
    assert_ok(&produced);
    assert_ok(&pigeon(
        &broker,
        ca_file,
        &["group", "create", "billing", "--topic", "orders"],
        b"",
    ));
    let consumed = pigeon(
        &broker,
        ca_file,
        &[
            "consume", "orders", "--group", "billing", "--max", "2", "--json",
        ],
        b"",
    );
    assert_ok(&consumed);
    let text = String::from_utf8_lossy(&consumed.stdout);
    assert!(
        text.contains("\"value\":\"first\"") && text.contains("\"value\":\"second\""),
        "{text}"
    );
    // PIGEON_TLS_CA works like --tls-ca.
    let mut command = pigeon_command(broker.addr);
    command
        .env("PIGEON_TLS_CA", &ca.cert)
        .args(["topic", "list"]);
    let listed = run(command, b"", RUN_TIMEOUT);
    assert_ok(&listed);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("orders"));
    // The load generator speaks TLS too.
    let bench = pigeon(
        &broker,
        ca_file,
        &["bench", "produce", "--messages", "2000", "--json"],
        b"",
    );
    assert_ok(&bench);
    // The HTTP listener serves HTTPS, and tells a plain HTTP client so.
    let (status, body) = https_get(broker.http, &ca.cert, "/health").expect("https");
    assert_eq!((status, body.as_str()), (200, "serving\n"));
    let (status, body) = pigeon_suite::http_get(broker.http, "/health");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTPS"), "{body}");
}

#[test]
fn plain_clients_and_untrusted_certificates_are_refused_with_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "main");
    let other = Ca::new(tmp.path(), "other");
    let broker = start(&tmp.path().join("data"), &ca.broker("broker"), &[]);
    // Plain TCP to the TLS listener.
    let plain = pigeon(&broker, None, &["topic", "list"], b"");
    assert_fails_with(&plain, "requires TLS");
    assert!(plain.stderr.contains("--tls-ca"), "{}", plain.stderr);
    // A CA that did not sign the broker's certificate.
    let unknown = pigeon(&broker, Some(&other.cert), &["topic", "list"], b"");
    assert_fails_with(&unknown, "not signed by a CA of the trusted bundle");
    // A certificate for another host.
    let elsewhere = ca.issue("elsewhere", &["broker.example"], "pigeon-broker", false);
    let broker = start(&tmp.path().join("data2"), &elsewhere, &[]);
    let wrong_host = pigeon(&broker, Some(&ca.cert), &["topic", "list"], b"");
    assert_fails_with(&wrong_host, "not valid for 127.0.0.1");
    // Asked by its name, the same certificate is fine.
    let named = pigeon(
        &broker,
        Some(&ca.cert),
        &["--tls-server-name", "broker.example", "topic", "list"],
        b"",
    );
    assert_ok(&named);
    // An expired certificate.
    let expired = ca.issue("expired", &["127.0.0.1"], "pigeon-broker", true);
    let broker = start(&tmp.path().join("data3"), &expired, &[]);
    let out = pigeon(&broker, Some(&ca.cert), &["topic", "list"], b"");
    assert_fails_with(&out, "expired");
    // TLS to a plain listener.
    let plain_broker = Broker::start(&tmp.path().join("data4"), &[]);
    let out = pigeon(&plain_broker, Some(&ca.cert), &["topic", "list"], b"");
    assert_fails_with(&out, "did not answer in TLS");
}

#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "main");
    let clients = Ca::new(tmp.path(), "clients");
    let client_ca = clients.cert.display().to_string();
    let broker = start(
        &tmp.path().join("data"),
        &ca.broker("broker"),
        &["--tls-client-ca", &client_ca],
    );
    let without = pigeon(&broker, Some(&ca.cert), &["topic", "list"], b"");
    assert_eq!(without.code, Some(1), "{}", without.stderr);
    assert!(
        without.stderr.contains("client certificate"),
        "{}",
        without.stderr
    );
    let billing = clients.client("billing");
    let cert = billing.cert.display().to_string();
    let key = billing.key.display().to_string();
    let with = pigeon(
        &broker,
        Some(&ca.cert),
        &["--tls-cert", &cert, "--tls-key", &key, "topic", "list"],
        b"",
    );
    assert_ok(&with);
    // A certificate from a CA the broker does not trust for clients.
    let stranger = ca.client("stranger");
    let cert = stranger.cert.display().to_string();
    let key = stranger.key.display().to_string();
    let refused = pigeon(
        &broker,
        Some(&ca.cert),
        &["--tls-cert", &cert, "--tls-key", &key, "topic", "list"],
        b"",
    );
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("refused this client's certificate"),
        "{}",
        refused.stderr
    );
}

fn sighup(broker: &Broker) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

fn tls_client_config(ca: &Path) -> ClientConfig {
    ClientConfig {
        tls: Some(TlsConfig::from_pem_files(ca, None).expect("tls config")),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    }
}

#[test]
fn a_sighup_reload_serves_new_connections_and_keeps_established_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = Ca::new(tmp.path(), "first");
    let second = Ca::new(tmp.path(), "second");
    let served = first.broker("served");
    let broker = start(&tmp.path().join("data"), &served, &[]);
    let rt = runtime();
    rt.block_on(async {
        let addr = broker.addr.to_string();
        let old = Client::connect_with(addr.clone(), tls_client_config(&first.cert))
            .await
            .expect("connect with the first CA");
        old.admin().list_topics().await.expect("served");
        // A bad certificate at a reload is refused; the one in use stays.
        std::fs::write(&served.cert, b"not a certificate").expect("write");
        sighup(&broker);
        wait_until(
            Duration::from_secs(30),
            "the failed reload to be logged",
            || broker.log_text().contains("could not be reloaded"),
        );
        Client::connect_with(addr.clone(), tls_client_config(&first.cert))
            .await
            .expect("the first certificate still serves new connections");
        // The second CA's certificate takes over at the next reload.
        let renewed = second.broker("renewed");
        std::fs::copy(&renewed.cert, &served.cert).expect("copy cert");
        std::fs::copy(&renewed.key, &served.key).expect("copy key");
        sighup(&broker);
        wait_until(Duration::from_secs(30), "the reload to be logged", || {
            broker
                .log_text()
                .contains("TLS certificate, key and client CA reloaded")
        });
        let fresh = Client::connect_with(addr.clone(), tls_client_config(&second.cert))
            .await
            .expect("a new connection gets the new certificate");
        fresh.admin().list_topics().await.expect("served");
        let stale = Client::connect_with(addr.clone(), tls_client_config(&first.cert)).await;
        assert!(
            matches!(stale, Err(ClientError::Tls { .. })),
            "the first CA no longer verifies: {stale:?}"
        );
        // The connection made before both reloads was never dropped.
        old.admin()
            .list_topics()
            .await
            .expect("the old connection still works");
        assert_eq!(old.connection_generation(), 1, "no reconnection happened");
    });
}

/// A plain HTTP client whose request reaches the HTTPS listener after the
/// broker answered it (the broker decides on the first bytes) still gets
/// a clean close: the broker reads what the client sends before closing,
/// so the client's later writes and its read of the `400` do not meet a
/// reset (on a close with unread bytes, TCP resets the connection).
#[test]
fn a_plain_http_client_that_writes_after_the_https_hint_is_not_reset() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "main");
    let broker = start(&tmp.path().join("data"), &ca.broker("broker"), &[]);
    let mut stream = std::net::TcpStream::connect(broker.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(b"GET").expect("first bytes");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    while !answer.ends_with(b"use https://\n") {
        let read = stream.read(&mut chunk).expect("the broker's answer");
        assert!(read > 0, "closed before the whole answer: {answer:?}");
        answer.extend_from_slice(&chunk[..read]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The rest of the request, after the broker answered and shut its side.
    for piece in [&b" /health HTTP/1.1\r\n"[..], b"Host: localhost\r\n\r\n"] {
        std::thread::sleep(Duration::from_millis(50));
        stream
            .write_all(piece)
            .expect("the broker still reads what the client sends");
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest);
    assert!(end.is_ok(), "a reset instead of a clean close: {end:?}");
}
