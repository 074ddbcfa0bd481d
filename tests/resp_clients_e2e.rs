//! Real Redis client libraries in other languages than Rust against a real
//! `pigeon-broker`: redis-py (Python) and ioredis (Node). Each runs the
//! same story, in `tests/clients/`: pipelined `XADD`s, a consumer group
//! with `XREADGROUP` and `XACK`, claiming with `XCLAIM` and `XAUTOCLAIM`;
//! then the broker is killed with SIGKILL and started again, and the
//! client checks that every entry whose `XADD` was answered is still
//! there and that the entries pending at the kill are delivered again
//! and pending again.
//!
//! Each test prints a note and passes when its language or client library
//! is not installed (`.ci/run` installs both when it can: redis-py with
//! pip, ioredis with npm into `target/node`, found through `NODE_PATH`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use pigeon_suite::Broker;

/// `program` on the `PATH`, without a note.
fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(program))
        .find(|p| p.is_file())
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Runs `command`; its stdout, trimmed, or a panic with both outputs.
fn run(mut command: Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Publishes and consumes with `client` (a command for a phase and a
/// port), kills the broker with SIGKILL, restarts it and checks the
/// replay.
fn publish_kill_replay(client: impl Fn(&str, &str) -> Command) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pigeon = Broker::start(&dir.path().join("data"), &[]);
    let port = pigeon.resp.expect("resp").port().to_string();
    let ids = run(client("publish", &port), "publish");
    assert_eq!(ids.split(',').count(), 6, "{ids}");
    pigeon.kill();
    pigeon.restart();
    let port = pigeon.resp.expect("resp").port().to_string();
    let mut replay = client("replay", &port);
    replay.arg(&ids);
    assert_eq!(run(replay, "replay after kill -9"), "ok");
}

#[test]
fn redis_py_publishes_consumes_claims_and_replays_after_kill_9() {
    let Some(python) = on_path("python3") else {
        eprintln!("note: python3 is not installed; skipping the redis-py test");
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import redis"])
        .output()
        .expect("python3");
    if !probe.status.success() {
        eprintln!("note: the Python redis package is not installed; skipping (pip install redis)");
        return;
    }
    publish_kill_replay(|phase, port| {
        let mut command = Command::new(&python);
        command
            .arg(script("redis_py_streams.py"))
            .args([phase, port]);
        command
    });
}

/// `NODE_PATH` with the directory `.ci/run` installs ioredis into
/// (`target/node/node_modules`) in front.
fn node_path() -> OsString {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node/node_modules");
    let mut paths = vec![ours];
    if let Some(existing) = std::env::var_os("NODE_PATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

#[test]
fn ioredis_publishes_consumes_claims_and_replays_after_kill_9() {
    let Some(node) = on_path("node") else {
        eprintln!(
            "note: node is not installed; skipping the ioredis test (apt-get install -y nodejs npm)"
        );
        return;
    };
    let probe = Command::new(&node)
        .args(["-e", "require('ioredis')"])
        .env("NODE_PATH", node_path())
        .output()
        .expect("node");
    if !probe.status.success() {
        eprintln!(
            "note: the ioredis package is not installed; skipping (npm install --prefix target/node ioredis)"
        );
        return;
    }
    publish_kill_replay(|phase, port| {
        let mut command = Command::new(&node);
        command
            .arg(script("ioredis_streams.js"))
            .args([phase, port])
            .env("NODE_PATH", node_path());
        command
    });
}
