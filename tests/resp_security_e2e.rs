//! The Redis listener with TLS and users, end to end through the real
//! `pigeon-broker`: with `--tls-cert` it speaks TLS only (a plain client is
//! told so); with `--users`, Redis users are Pigeon users (`AUTH user
//! password`, `HELLO 3 AUTH …`, `AUTH password` as `default`), nothing but
//! `AUTH`/`HELLO`/`QUIT`/`RESET` is served before, passwords are refused on
//! plain TCP, a client certificate naming a user authenticates, every
//! command runs under the user's rules (`NOPERM` naming the user) and
//! refusals reach the audit trail.
//!
//! Certificates are made in the test; waits poll with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pigeon_suite::pki::Ca;
use pigeon_suite::process::{pigeon_command, run};
use pigeon_suite::resp::{RespClient, Value};
use pigeon_suite::{Broker, binary};

const ADMIN_PASSWORD: &str = "the admin's long passphrase";
const WRITER_PASSWORD: &str = "writer writes orders";
const READER_PASSWORD: &str = "reader only reads";

/// What the users file stores for `password` (`pigeon-broker
/// hash-password`, argon2id).
fn hash(password: &str) -> String {
    let mut command = Command::new(binary("pigeon-broker"));
    command.arg("hash-password");
    let out = run(
        command,
        format!("{password}\n").as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// admin (everything), default (the `AUTH password` user: read orders),
/// writer (produce and read orders*), reader (read orders), and the
/// certificate-only user cert-user (read orders).
fn users_file(dir: &Path) -> PathBuf {
    let text = format!(
        "[[users]]\nname = \"admin\"\npassword_hash = \"{}\"\nallow = [{{ topics = \"*\", ops = [\"all\"] }}]\n\n\
         [[users]]\nname = \"default\"\npassword_hash = \"{}\"\nallow = [{{ topics = \"orders\", ops = [\"read\"] }}]\n\n\
         [[users]]\nname = \"writer\"\npassword_hash = \"{}\"\nallow = [{{ topics = \"orders*\", ops = [\"produce\", \"read\"] }}]\n\n\
         [[users]]\nname = \"reader\"\npassword_hash = \"{}\"\nallow = [{{ topics = \"orders\", ops = [\"read\"] }}]\n\n\
         [[users]]\nname = \"cert-user\"\nallow = [{{ topics = \"orders\", ops = [\"read\"] }}]\n",
        hash(ADMIN_PASSWORD),
        hash(READER_PASSWORD),
        hash(WRITER_PASSWORD),
        hash(READER_PASSWORD),
    );
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write users");
    path
}

fn error_of(value: &Value) -> &str {
    match value {
        Value::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn assert_ok(value: Value) {
    assert_eq!(value, Value::Status("OK".into()));
}

/// `__audit`, read as admin with `pigeon read` over TLS.
fn read_audit(broker: &Broker, ca: &Path) -> String {
    let mut command = pigeon_command(broker.addr);
    command
        .arg("--tls-ca")
        .arg(ca)
        .env("PIGEON_USER", "admin")
        .env("PIGEON_PASSWORD", ADMIN_PASSWORD)
        .args(["read", "__audit"]);
    let out = run(command, b"", Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    String::from_utf8(out.stdout).expect("utf-8")
}

fn start(dir: &Path, extra: &[String]) -> Broker {
    let flags: Vec<&str> = extra.iter().map(String::as_str).collect();
    Broker::start(&dir.join("data"), &flags)
}

#[test]
fn over_tls_redis_users_are_pigeon_users_and_their_rules_apply() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "main");
    let mut flags = ca.broker("broker").flags();
    flags.extend([
        "--users".into(),
        users_file(tmp.path()).display().to_string(),
    ]);
    let broker = start(tmp.path(), &flags);
    let resp = broker.resp.expect("resp listener");

    // A plain client on the TLS listener is told, in Redis's terms.
    let mut plain = RespClient::connect(resp);
    let refused = plain.cmd(&["PING"]);
    assert!(error_of(&refused).contains("requires TLS"), "{refused:?}");
    assert!(plain.closed_within(Duration::from_secs(10)));

    let mut admin = RespClient::connect_tls(resp, &ca.cert, None);
    // Nothing before authenticating, except what Redis also allows.
    assert_eq!(
        error_of(&admin.cmd(&["PING"])),
        "NOAUTH Authentication required."
    );
    let xadd = admin.cmd(&["XADD", "orders", "*", "f", "v"]);
    assert!(error_of(&xadd).starts_with("NOAUTH"), "{xadd:?}");
    assert!(error_of(&admin.cmd(&["HELLO", "3"])).starts_with("NOAUTH"));
    // A wrong password and an unknown user: the same answer.
    let wrong = admin.cmd(&["AUTH", "admin", "not it"]);
    let unknown = admin.cmd(&["AUTH", "mallory", "not it"]);
    assert_eq!(wrong, unknown);
    assert!(error_of(&wrong).starts_with("WRONGPASS"), "{wrong:?}");
    assert_ok(admin.cmd(&["AUTH", "admin", ADMIN_PASSWORD]));
    assert_eq!(admin.cmd(&["PING"]), Value::Status("PONG".into()));
    // The admin may create streams (topics); the writer may not.
    let first = admin.cmd(&["XADD", "orders", "*", "by", "admin"]);
    assert!(matches!(first, Value::Bulk(_)), "{first:?}");

    let mut writer = RespClient::connect_tls(resp, &ca.cert, None);
    let hello = writer.cmd(&["HELLO", "3", "AUTH", "writer", WRITER_PASSWORD]);
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    let appended = writer.cmd(&["XADD", "orders", "*", "by", "writer"]);
    assert!(matches!(appended, Value::Bulk(_)), "{appended:?}");
    let range = writer.cmd(&["XRANGE", "orders", "-", "+"]);
    assert!(
        matches!(&range, Value::Array(e) if e.len() == 2),
        "{range:?}"
    );
    let create = writer.cmd(&["XADD", "orders-new", "*", "f", "v"]);
    assert!(
        error_of(&create).starts_with("NOPERM user writer may not administer"),
        "{create:?}"
    );
    let trim = writer.cmd(&["XTRIM", "orders", "MAXLEN", "~", "0"]);
    assert!(
        error_of(&trim).starts_with("NOPERM user writer"),
        "{trim:?}"
    );
    let elsewhere = writer.cmd(&["XRANGE", "payments", "-", "+"]);
    // A topic the user may not describe looks absent: an empty range.
    assert_eq!(elsewhere, Value::Array(Vec::new()));

    // `AUTH password` is user default; RESET forgets the user.
    let mut reader = RespClient::connect_tls(resp, &ca.cert, None);
    assert_ok(reader.cmd(&["AUTH", READER_PASSWORD]));
    let range = reader.cmd(&["XRANGE", "orders", "-", "+"]);
    assert!(
        matches!(&range, Value::Array(e) if e.len() == 2),
        "{range:?}"
    );
    let denied = reader.cmd(&["XADD", "orders", "*", "f", "v"]);
    assert!(
        error_of(&denied).starts_with("NOPERM user default may not produce to topic orders"),
        "{denied:?}"
    );
    assert_eq!(reader.cmd(&["RESET"]), Value::Status("RESET".into()));
    assert!(error_of(&reader.cmd(&["XLEN", "orders"])).starts_with("NOAUTH"));
    assert_ok(reader.cmd(&["AUTH", "reader", READER_PASSWORD]));
    assert_eq!(reader.cmd(&["XLEN", "orders"]), Value::Int(2));

    // The refusals and the failed logins are in the audit trail (written
    // by a task of its own, soon after; `__audit` is not a Redis key, so
    // it is read with `pigeon read`).
    let mut text = String::new();
    pigeon_suite::wait_until(Duration::from_secs(30), "the audit records", || {
        text = read_audit(&broker, &ca.cert);
        text.contains("stream trim")
    });
    for needle in [
        "\"user\":\"writer\"",
        "\"result\":\"refused\"",
        "\"op\":\"authenticate\"",
    ] {
        assert!(text.contains(needle), "{needle} not in the audit: {text}");
    }
    let log = broker.log_text();
    for secret in [ADMIN_PASSWORD, WRITER_PASSWORD, READER_PASSWORD] {
        assert!(!log.contains(secret), "the log shows a password");
    }
}

#[test]
fn on_plain_tcp_passwords_are_refused_and_silent_connections_are_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = users_file(tmp.path()).display().to_string();
    let flags = [
        "--users".into(),
        users,
        "--auth-timeout-ms".into(),
        "500".into(),
    ];
    let broker = start(tmp.path(), &flags);
    let resp = broker.resp.expect("resp listener");
    let mut client = RespClient::connect(resp);
    let refused = client.cmd(&["AUTH", "admin", ADMIN_PASSWORD]);
    assert!(
        error_of(&refused).contains("a password is accepted only over TLS"),
        "{refused:?}"
    );
    assert!(error_of(&client.cmd(&["XLEN", "orders"])).starts_with("NOAUTH"));
    // Never authenticated: closed after auth_timeout_ms.
    assert!(client.closed_within(Duration::from_secs(20)));
}

#[test]
fn a_client_certificate_naming_a_user_authenticates_the_connection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(tmp.path(), "main");
    let clients = Ca::new(tmp.path(), "clients");
    let mut flags = ca.broker("broker").flags();
    flags.extend([
        "--users".into(),
        users_file(tmp.path()).display().to_string(),
        "--tls-client-ca".into(),
        clients.cert.display().to_string(),
    ]);
    let broker = start(tmp.path(), &flags);
    let resp = broker.resp.expect("resp listener");
    let cert_user = clients.client("cert-user");
    let mut client = RespClient::connect_tls(resp, &ca.cert, Some(&cert_user));
    assert_eq!(client.cmd(&["PING"]), Value::Status("PONG".into()));
    let denied = client.cmd(&["XADD", "orders", "*", "f", "v"]);
    assert!(
        error_of(&denied).starts_with("NOPERM user cert-user"),
        "{denied:?}"
    );
    // A certificate naming nobody: the connection must still authenticate.
    let stranger = clients.client("stranger");
    let mut client = RespClient::connect_tls(resp, &ca.cert, Some(&stranger));
    assert!(error_of(&client.cmd(&["PING"])).starts_with("NOAUTH"));
}
