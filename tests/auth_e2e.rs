//! Users and authentication end to end, through the real `pigeon-broker`
//! and `pigeon` binaries: `hash-password` makes the users file; with
//! `--users`, nothing but authentication is served before it; SCRAM-SHA-256
//! on plain TCP, PLAIN only over TLS, a client certificate naming a user;
//! wrong passwords and unknown users get the same answer; failures are
//! rate-limited per address; a connection that does not authenticate in
//! time is closed; no password or hash reaches the log.
//!
//! Every `pigeon` run is bounded; waits poll with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pigeon_client::protocol::{
    ErrorCode, ListTopicsRequest, Request, ResponseBody, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use pigeon_suite::pki::Ca;
use pigeon_suite::process::{Output, pigeon_command, run};
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, binary, runtime};

/// Longest a single command may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const ALICE_PASSWORD: &str = "correct horse battery staple";
const CAROL_PASSWORD: &str = "carol's own secret";

/// `pigeon-broker hash-password ARGS` with `password` on stdin.
fn hash_password(password: &str, args: &[&str]) -> Output {
    let mut command = Command::new(binary("pigeon-broker"));
    command.arg("hash-password").args(args);
    run(command, format!("{password}\n").as_bytes(), RUN_TIMEOUT)
}

/// A users file: alice (hash and SCRAM verifier, everything), carol (hash
/// only, everything), and the certificate-only user cert-user.
fn users_file(dir: &Path) -> PathBuf {
    let alice = hash_password(ALICE_PASSWORD, &["--toml"]);
    assert_eq!(alice.code, Some(0), "{}", alice.stderr);
    let carol = hash_password(CAROL_PASSWORD, &[]);
    assert_eq!(carol.code, Some(0), "{}", carol.stderr);
    let carol_hash = String::from_utf8(carol.stdout).expect("utf-8");
    let text = format!(
        "[[users]]\nname = \"alice\"\n{}allow = [{{ topics = \"*\", ops = [\"all\"] }}]\n\n\
         [[users]]\nname = \"carol\"\npassword_hash = \"{}\"\nallow = [{{ topics = \"*\", ops = [\"all\"] }}]\n\n\
         [[users]]\nname = \"cert-user\"\nallow = [{{ topics = \"*\", ops = [\"all\"] }}]\n",
        String::from_utf8(alice.stdout).expect("utf-8"),
        carol_hash.trim()
    );
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write users");
    path
}

/// `pigeon ARGS` as `user` with `password` in PIGEON_PASSWORD.
fn pigeon_as(broker: &Broker, user: Option<&str>, password: Option<&str>, args: &[&str]) -> Output {
    let mut command = pigeon_command(broker.addr);
    command
        .env_remove("PIGEON_USER")
        .env_remove("PIGEON_PASSWORD")
        .env_remove("PIGEON_TLS_CA");
    if let Some(user) = user {
        command.args(["--user", user]);
    }
    if let Some(password) = password {
        command.env("PIGEON_PASSWORD", password);
    }
    command.args(args);
    run(command, b"", RUN_TIMEOUT)
}

fn assert_ok(out: &Output) {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in: {}",
        out.stderr
    );
}

#[test]
fn hash_password_prints_a_phc_string_or_the_users_file_lines() {
    let out = hash_password("s3cret", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("$argon2id$v=19$"), "{text}");
    assert!(!text.contains("s3cret"));
    let out = hash_password("s3cret", &["--scram"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
    let out = hash_password("s3cret", &["--toml"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("password_hash = \"$argon2id$"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("scram_sha256 = \"SCRAM-SHA-256$"),
        "{text}"
    );
    let empty = hash_password("", &[]);
    assert_eq!(empty.code, Some(2), "{}", empty.stderr);
    assert!(empty.stderr.contains("empty"), "{}", empty.stderr);
}

#[test]
fn only_authenticated_connections_are_served_and_scram_works_on_plain_tcp() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = users_file(tmp.path());
    let users_flag = users.display().to_string();
    let broker = Broker::start(&tmp.path().join("data"), &["--users", &users_flag]);
    let rt = runtime();
    rt.block_on(async {
        // Handshake is served; anything else needs authentication.
        let mut raw = RawClient::connect(broker.addr).await;
        match raw.call(ListTopicsRequest.into()).await {
            ResponseBody::Error(e) => {
                assert_eq!(e.code, ErrorCode::AuthenticationRequired, "{}", e.message);
                assert!(e.message.contains("--user"), "{}", e.message);
            }
            other => panic!("served before authentication: {other:?}"),
        }
        // PLAIN sends the password itself: refused on plain TCP.
        let plain = SaslHandshakeRequest {
            mechanism: "PLAIN".into(),
        };
        match raw.call(plain.into()).await {
            ResponseBody::Error(e) => {
                assert_eq!(e.code, ErrorCode::AuthenticationFailed);
                assert!(e.message.contains("not TLS"), "{}", e.message);
            }
            other => panic!("PLAIN offered on plain TCP: {other:?}"),
        }
        let stray = SaslAuthenticateRequest {
            auth_bytes: Bytes::from_static(b"\0alice\0guess"),
        };
        assert!(matches!(
            raw.call(Request::from(stray)).await,
            ResponseBody::Error(e) if e.code == ErrorCode::AuthenticationFailed
        ));
    });
    // SCRAM-SHA-256 (plain TCP): the CLI works as alice.
    let alice = Some(ALICE_PASSWORD);
    assert_ok(&pigeon_as(
        &broker,
        Some("alice"),
        alice,
        &["topic", "create", "orders"],
    ));
    let listed = pigeon_as(&broker, Some("alice"), alice, &["topic", "list"]);
    assert_ok(&listed);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("orders"));
    // A password file works like PIGEON_PASSWORD.
    let file = tmp.path().join("alice.password");
    std::fs::write(&file, format!("{ALICE_PASSWORD}\n")).expect("write");
    let file = file.display().to_string();
    assert_ok(&pigeon_as(
        &broker,
        Some("alice"),
        None,
        &["--password-file", &file, "topic", "list"],
    ));
    // Wrong password and unknown user: the same answer.
    let wrong = pigeon_as(
        &broker,
        Some("alice"),
        Some("not-alices-password-42"),
        &["topic", "list"],
    );
    assert_fails_with(
        &wrong,
        "authentication failed for user alice: unknown user or wrong password",
    );
    let unknown = pigeon_as(
        &broker,
        Some("mallory"),
        Some("anything"),
        &["topic", "list"],
    );
    assert_fails_with(
        &unknown,
        "authentication failed for user mallory: unknown user or wrong password",
    );
    // carol has no SCRAM verifier: on plain TCP she cannot log in.
    let carol = pigeon_as(
        &broker,
        Some("carol"),
        Some(CAROL_PASSWORD),
        &["topic", "list"],
    );
    assert_fails_with(&carol, "authentication failed for user carol");
    // No user at all: told to authenticate.
    let anonymous = pigeon_as(&broker, None, None, &["topic", "list"]);
    assert_fails_with(&anonymous, "needs an authenticated connection");
    let no_password = pigeon_as(&broker, Some("alice"), None, &["topic", "list"]);
    assert_fails_with(&no_password, "needs a password");
    let log = broker.log_text();
    let alice_hash = std::fs::read_to_string(&users).expect("users");
    for secret in [ALICE_PASSWORD, "not-alices-password-42", CAROL_PASSWORD] {
        assert!(!log.contains(secret), "the log shows a password:\n{log}");
        assert!(!wrong.stderr.contains(secret) && !carol.stderr.contains(secret));
    }
    for line in alice_hash.lines().filter(|l| l.contains('$')) {
        let value = line.split('"').nth(1).expect("quoted");
        assert!(!log.contains(value), "the log shows a hash");
    }
}

#[test]
fn plain_over_tls_and_client_certificates_authenticate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = users_file(tmp.path()).display().to_string();
    let ca = Ca::new(tmp.path(), "main");
    let clients = Ca::new(tmp.path(), "clients");
    let mut flags = ca.broker("broker").flags();
    flags.extend([
        "--users".into(),
        users,
        "--tls-client-ca".into(),
        clients.cert.display().to_string(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let broker = Broker::start(&tmp.path().join("data"), &flags);
    let ca_file = ca.cert.display().to_string();
    let with_cert =
        |cert: &pigeon_suite::pki::Issued, user: Option<&str>, password: Option<&str>| {
            let (c, k) = (
                cert.cert.display().to_string(),
                cert.key.display().to_string(),
            );
            let args = [
                "--tls-ca",
                &ca_file,
                "--tls-cert",
                &c,
                "--tls-key",
                &k,
                "topic",
                "list",
            ];
            pigeon_as(&broker, user, password, &args)
        };
    // A certificate whose CN is a user: authenticated without a password.
    assert_ok(&with_cert(&clients.client("cert-user"), None, None));
    // A certificate naming nobody: the connection must still authenticate.
    let stranger = clients.client("stranger");
    assert_fails_with(
        &with_cert(&stranger, None, None),
        "needs an authenticated connection",
    );
    // PLAIN over TLS: carol's argon2id hash is enough.
    assert_ok(&with_cert(&stranger, Some("carol"), Some(CAROL_PASSWORD)));
    let wrong = with_cert(&stranger, Some("carol"), Some("not hers"));
    assert_fails_with(&wrong, "authentication failed for user carol");
}

#[test]
fn failures_are_rate_limited_and_silent_connections_are_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = users_file(tmp.path()).display().to_string();
    let broker = Broker::start(
        &tmp.path().join("data"),
        &["--users", &users, "--auth-timeout-ms", "500"],
    );
    // Five failures from 127.0.0.1 spend its budget: then even the right
    // password is refused, with how long to wait.
    for _ in 0..5 {
        let out = pigeon_as(&broker, Some("alice"), Some("guess"), &["topic", "list"]);
        assert_fails_with(&out, "unknown user or wrong password");
    }
    let right = pigeon_as(
        &broker,
        Some("alice"),
        Some(ALICE_PASSWORD),
        &["topic", "list"],
    );
    assert_fails_with(
        &right,
        "too many failed authentications from 127.0.0.1; try again in",
    );
    // A connection that never authenticates is closed after auth_timeout_ms.
    runtime().block_on(async {
        let mut raw = RawClient::connect(broker.addr).await;
        let started = Instant::now();
        let frame = raw
            .next_frame()
            .await
            .expect("the broker says why")
            .expect("decodable");
        assert_eq!(frame.header.error_code, ErrorCode::AuthenticationRequired);
        match frame.body {
            Ok(ResponseBody::Error(e)) => assert!(
                e.message.contains("did not authenticate within 500 ms"),
                "{}",
                e.message
            ),
            other => panic!("{other:?}"),
        }
        assert!(raw.next_frame().await.is_none(), "then closed");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    });
}
