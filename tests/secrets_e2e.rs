//! No password, password hash or SCRAM verifier in any log line or error
//! text, end to end: brokers with users and `--log debug` are sent wrong
//! and right passwords over the binary protocol (SCRAM-SHA-256 on plain
//! TCP, PLAIN over TLS, with the `pigeon` CLI) and over the Redis listener
//! (`AUTH user pass`, `HELLO 3 AUTH user pass`, over TLS), and a users
//! file broken on its hash line is reloaded with SIGHUP; then the brokers'
//! whole logs and every text the clients got are searched for the
//! secrets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pigeon_suite::pki::Ca;
use pigeon_suite::process::{Output, pigeon_command, run};
use pigeon_suite::resp::{RespClient, Value};
use pigeon_suite::{Broker, binary, wait_until};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "s3cret-Correct-Horse-7731";
const WRONG: &str = "wr0ng-Battery-Staple-4410";

/// The users file's two credential lines for `PASSWORD`
/// (`hash-password --toml`).
fn credential_lines() -> String {
    let mut command = Command::new(binary("pigeon-broker"));
    command.args(["hash-password", "--toml"]);
    let out = run(command, format!("{PASSWORD}\n").as_bytes(), RUN_TIMEOUT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The secret strings of the credential lines: each whole value, and each
/// of its fields long enough to be recognisable (the argon2 salt and hash,
/// the SCRAM salt, stored key and server key).
fn secrets(lines: &str) -> Vec<String> {
    let mut secrets = vec![PASSWORD.to_owned(), WRONG.to_owned()];
    for line in lines.lines() {
        let Some((_, value)) = line.split_once(" = ") else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        secrets.push(value.to_owned());
        secrets.extend(
            value
                .split(['$', ':', ',', '='])
                // The mechanism's name is not a secret.
                .filter(|field| field.len() >= 12 && !field.starts_with("SCRAM-"))
                .map(str::to_owned),
        );
    }
    assert!(secrets.len() >= 7, "{secrets:?}");
    secrets
}

fn users_file(dir: &Path, lines: &str) -> PathBuf {
    let text = format!(
        "[[users]]\nname = \"alice\"\n{lines}allow = [{{ topics = \"*\", ops = [\"all\"] }}]\n"
    );
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write users");
    path
}

/// `pigeon ARGS` as alice with `password`; its stdout and stderr.
fn pigeon_as(broker: &Broker, password: &str, args: &[&str]) -> Output {
    let mut command = pigeon_command(broker.addr);
    command
        .env_remove("PIGEON_TLS_CA")
        .env("PIGEON_USER", "alice")
        .env("PIGEON_PASSWORD", password)
        .args(args);
    run(command, b"", RUN_TIMEOUT)
}

fn texts_of(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), out.stderr)
}

fn reply_text(value: &Value) -> String {
    format!("{value:?}")
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} contains the secret {secret:?}:\n{text}"
        );
    }
}

#[test]
fn no_password_hash_or_verifier_reaches_a_log_line_or_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lines = credential_lines();
    let secrets = secrets(&lines);
    let users = users_file(tmp.path(), &lines);
    let users_flag = users.display().to_string();
    let mut client_texts = Vec::new();

    // Plain TCP: SCRAM-SHA-256.
    let plain_dir = tmp.path().join("plain");
    std::fs::create_dir(&plain_dir).expect("dir");
    let plain = Broker::start(
        &plain_dir.join("data"),
        &["--users", &users_flag, "--log", "debug"],
    );
    let wrong = pigeon_as(&plain, WRONG, &["topic", "list"]);
    assert_ne!(wrong.code, Some(0), "a wrong password was accepted");
    assert!(
        wrong
            .stderr
            .contains("authentication failed for user alice"),
        "{}",
        wrong.stderr
    );
    client_texts.push(texts_of(&wrong));
    let right = pigeon_as(&plain, PASSWORD, &["topic", "create", "orders"]);
    assert_eq!(right.code, Some(0), "{}", right.stderr);
    client_texts.push(texts_of(&right));

    // A reload of a users file broken on its hash line: refused, logged.
    let broken = lines.replacen('\n', " oops\n", 1);
    std::fs::write(
        &users,
        format!(
            "[[users]]\nname = \"alice\"\n{broken}allow = [{{ topics = \"*\", ops = [\"all\"] }}]\n"
        ),
    )
    .expect("write broken users");
    // SAFETY: kill(2) on the broker this test started.
    assert_eq!(
        unsafe { libc::kill(plain.pid() as i32, libc::SIGHUP) },
        0,
        "SIGHUP"
    );
    wait_until(Duration::from_secs(20), "the failed reload logged", || {
        plain.log_text().contains("could not be reloaded")
    });

    // TLS: PLAIN over the binary protocol, and the Redis listener.
    let tls_dir = tmp.path().join("tls");
    std::fs::create_dir(&tls_dir).expect("dir");
    users_file(&tls_dir, &lines);
    let tls_users = tls_dir.join("users.toml").display().to_string();
    let ca = Ca::new(&tls_dir, "main");
    let mut flags = ca.broker("broker").flags();
    flags.extend(["--users".into(), tls_users, "--log".into(), "debug".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tls = Broker::start(&tls_dir.join("data"), &flags);
    let ca_file = ca.cert.display().to_string();
    let wrong = pigeon_as(&tls, WRONG, &["--tls-ca", &ca_file, "topic", "list"]);
    assert_ne!(wrong.code, Some(0), "a wrong password was accepted");
    client_texts.push(texts_of(&wrong));
    let right = pigeon_as(&tls, PASSWORD, &["--tls-ca", &ca_file, "topic", "list"]);
    assert_eq!(right.code, Some(0), "{}", right.stderr);
    client_texts.push(texts_of(&right));

    let resp = tls.resp.expect("resp listener");
    let mut redis = RespClient::connect_tls(resp, &ca.cert, None);
    for args in [
        vec!["AUTH", "alice", WRONG],
        vec!["AUTH", WRONG],
        vec!["HELLO", "3", "AUTH", "alice", WRONG],
        vec!["XADD", "orders", "*", "f", PASSWORD],
    ] {
        let reply = redis.cmd(&args);
        assert!(matches!(reply, Value::Error(_)), "{args:?}: {reply:?}");
        client_texts.push(reply_text(&reply));
    }
    let ok = redis.cmd(&["AUTH", "alice", PASSWORD]);
    assert_eq!(ok, Value::Status("OK".into()));
    let mut redis3 = RespClient::connect_tls(resp, &ca.cert, None);
    let hello = redis3.cmd(&["HELLO", "3", "AUTH", "alice", PASSWORD]);
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    client_texts.push(reply_text(&hello));
    // A command that fails after authenticating, naming its arguments.
    let bad = redis3.cmd(&["NOSUCHCOMMAND", PASSWORD]);
    client_texts.push(reply_text(&bad));

    // The logs are complete once the brokers stop.
    let mut plain = plain;
    let mut tls = tls;
    let _ = plain.terminate();
    let _ = tls.terminate();
    let (plain_log, tls_log) = (plain.log_text(), tls.log_text());
    assert!(
        plain_log.contains("DEBUG") || plain_log.contains("debug"),
        "the broker logged at debug level"
    );
    println!(
        "searched {} secrets in {} + {} bytes of broker log and {} client texts",
        secrets.len(),
        plain_log.len(),
        tls_log.len(),
        client_texts.len()
    );
    assert_clean("the plain broker's log", &plain_log, &secrets);
    assert_clean("the TLS broker's log", &tls_log, &secrets);
    for text in &client_texts {
        // The client's own argument echo is not the broker's doing: only
        // the password values sent as a command's data may come back in
        // Redis's unknown-command text, which quotes arguments; check it
        // names no hash nor verifier.
        let stored: Vec<String> = secrets
            .iter()
            .filter(|s| s.as_str() != PASSWORD && s.as_str() != WRONG)
            .cloned()
            .collect();
        assert_clean("a client's text", text, &stored);
    }
    for text in client_texts.iter().filter(|t| !t.contains("NOSUCHCOMMAND")) {
        assert_clean("a client's text", text, &secrets);
    }
}
