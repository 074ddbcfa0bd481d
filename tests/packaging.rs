//! Checks of what `packaging/` ships, fast enough for every CI run (no
//! image build, no service manager):
//!
//! - the broker's systemd readiness protocol (`Type=notify`): `READY=1`
//!   arrives once both ports answer, `STOPPING=1` at SIGTERM, and a broken
//!   `NOTIFY_SOCKET` never stops the broker;
//! - the Grafana dashboard (`packaging/grafana/pigeon-dashboard.json`):
//!   its structure, its PromQL (lexically), and that every metric it
//!   queries is one a real broker exports (after a produce, a fetch, an
//!   error, a refused connection and a group with an ack, a nack and a
//!   reject), or one agreed for issue 17 and not exported yet;
//! - the systemd unit (`packaging/systemd/pigeon-broker.service`): its
//!   required keys, and `systemd-analyze verify` where that tool exists;
//! - the container image definition (`packaging/container/Dockerfile`): a
//!   structural lint (stages, non-root user, volume, health check), and its
//!   `HEALTHCHECK` command run against a real broker.
//!
//! Building the image is manual (`docker build -f
//! packaging/container/Dockerfile .`): too slow for CI.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pigeon_client::protocol::*;
use pigeon_suite::raw::RawClient;
use pigeon_suite::{Broker, binary, http_get, metric, runtime, wait_until};
use serde_json::Value;

/// How long any one wait in these tests may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// systemd readiness (sd_notify)
// ---------------------------------------------------------------------------

/// A `pigeon-broker` started here with its own environment (the shared
/// harness has no way to set one). Killed when dropped.
struct NotifiedBroker {
    child: Child,
    log: PathBuf,
}

impl NotifiedBroker {
    fn start(dir: &Path, notify_socket: &Path) -> NotifiedBroker {
        let log = dir.join("broker.log");
        let stderr = std::fs::File::create(&log).expect("broker log");
        let child = Command::new(binary("pigeon-broker"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--log", "info"])
            .env("NOTIFY_SOCKET", notify_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start pigeon-broker");
        NotifiedBroker { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The protocol and HTTP addresses from the "serving" line, if logged.
    fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        let text = self.log_text();
        let line = text
            .lines()
            .find(|l| l.contains("pigeon-broker is serving"))?;
        let field = |name: &str| -> Option<SocketAddr> {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            line[start..].split_whitespace().next()?.parse().ok()
        };
        Some((field("listen")?, field("http")?))
    }

    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with a pid this test started and a valid signal.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    }

    /// The exit code, waiting at most [`WAIT`].
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "pigeon-broker did not exit within {WAIT:?} of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NotifiedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next notification datagram, as text; panics after [`WAIT`].
fn next_notification(socket: &UnixDatagram, broker: &NotifiedBroker, what: &str) -> String {
    let mut buffer = [0u8; 4096];
    match socket.recv(&mut buffer) {
        Ok(n) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
        Err(e) => panic!(
            "no {what} notification within {WAIT:?} ({e}):\n{}",
            broker.log_text()
        ),
    }
}

#[test]
fn systemd_notify_ready_once_both_ports_answer_and_stopping_at_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut broker = NotifiedBroker::start(tmp.path(), &socket_path);

    let ready = next_notification(&socket, &broker, "READY=1");
    assert_eq!(ready.lines().collect::<Vec<_>>(), ["READY=1"], "{ready:?}");
    // Told "ready": both ports answer now, without any retry.
    let (addr, http) = broker
        .addresses()
        .unwrap_or_else(|| panic!("READY=1 before the serving line:\n{}", broker.log_text()));
    runtime().block_on(async {
        let mut client = RawClient::connect(addr).await;
        client.create_topic("orders", 1).await;
    });
    assert_eq!(http_get(http, "/health").0, 200, "/health once ready");
    assert_eq!(http_get(http, "/ready").0, 200, "/ready once ready");

    broker.sigterm();
    let stopping = next_notification(&socket, &broker, "STOPPING=1");
    assert_eq!(
        stopping.lines().collect::<Vec<_>>(),
        ["STOPPING=1"],
        "{stopping:?}"
    );
    assert_eq!(broker.wait_exit(), Some(0), "{}", broker.log_text());
}

#[test]
fn a_broken_notify_socket_is_logged_and_the_broker_serves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-dir/notify.sock");
    let mut broker = NotifiedBroker::start(tmp.path(), &missing);
    wait_until(WAIT, "the broker to serve", || broker.addresses().is_some());
    let (_, http) = broker.addresses().expect("addresses");
    assert_eq!(http_get(http, "/health").0, 200);
    wait_until(WAIT, "the warning about NOTIFY_SOCKET", || {
        broker
            .log_text()
            .contains("cannot notify the service manager")
    });
    broker.sigterm();
    assert_eq!(broker.wait_exit(), Some(0), "{}", broker.log_text());
}

// ---------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------

const DASHBOARD: &str = "packaging/grafana/pigeon-dashboard.json";

/// Metrics the dashboard may query that the broker does not export yet
/// (none: every agreed metric of issue 17 is exported now, so the test
/// scrapes each one).
const AGREED_NOT_YET_EXPORTED: &[&str] = &[];

/// What the dashboard must show (issue 17): each of these is queried.
const MUST_SHOW: &[&str] = &[
    "pigeon_produce_records_total",
    "pigeon_produce_latency_seconds",
    "pigeon_fetch_requests_total",
    "pigeon_fetch_latency_seconds",
    "pigeon_group_lag_messages",
    "pigeon_group_in_flight_messages",
    "pigeon_group_delayed_messages",
    "pigeon_group_redeliveries_total",
    "pigeon_group_acks_total",
    "pigeon_group_dead_lettered_total",
    "pigeon_group_oldest_unacked_age_seconds",
    "pigeon_partition_read_only",
    "pigeon_log_fsync_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_threads",
];

/// Functions and keywords the dashboard's PromQL may use before `(`.
const PROMQL_CALLS: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "rate",
    "increase",
    "histogram_quantile",
    "time",
    "vector",
    "by",
    "without",
    "label_values",
];

/// Every PromQL string of the dashboard: panel targets' `expr` and the
/// template variables' queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, Some(k), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            Value::String(s) if matches!(key, Some("expr" | "definition")) => out.push(s.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, None, &mut out);
    out
}

/// The metric names a PromQL expression reads (identifiers with Pigeon's
/// or Prometheus' process prefix), and a lexical check: strings closed,
/// brackets balanced, every call a known function.
fn promql_metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    let mut open = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some((_, '"')) => break,
                    Some(_) => {}
                    None => return Err(format!("unclosed string at {i}")),
                }
            },
            '(' | '{' | '[' => open.push(c),
            ')' | '}' | ']' => {
                let want = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if open.pop() != Some(want) {
                    return Err(format!("unbalanced {c:?} at {i}"));
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                let word = &expr[i..end];
                let rest = expr[end..].trim_start();
                let inside_braces = open.last() == Some(&'{');
                if word.starts_with("pigeon_") || word.starts_with("process_") {
                    names.insert(word.to_owned());
                } else if PROMQL_CALLS.contains(&word) {
                    // An aggregation may put `by (...)` before its `(`.
                } else if rest.starts_with('(') {
                    return Err(format!("unknown function {word:?}"));
                } else if !inside_braces && open.last() != Some(&'[') && !is_label_list(expr, i) {
                    let keywords = ["or", "and", "unless"];
                    if !keywords.contains(&word) {
                        return Err(format!("unexpected word {word:?}"));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(c) = open.last() {
        return Err(format!("unclosed {c:?}"));
    }
    Ok(names)
}

/// Whether the word at `at` is inside `by (...)` or `without (...)`, or a
/// label argument of `label_values(...)`.
fn is_label_list(expr: &str, at: usize) -> bool {
    let before = &expr[..at];
    let Some(paren) = before.rfind('(') else {
        return false;
    };
    if before[paren..].contains(')') {
        return false;
    }
    let head = before[..paren].trim_end();
    head.ends_with("by") || head.ends_with("without") || head.ends_with("label_values")
}

/// Every metric name with a `# HELP` line in a `/metrics` text.
fn help_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The family `name` belongs to among those `known`: itself, or for a
/// histogram's series (`_bucket`, `_sum`, `_count`) the histogram.
fn family_of(name: &str, known: impl Fn(&str) -> bool) -> Option<&str> {
    if known(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| known(base))
}

/// Gives every exported family a series: a produce, a fetch, an error, a
/// refused connection, and a group with an ack, a nack and a reject.
fn exercise(broker: &Broker) {
    runtime().block_on(async {
        let mut admin = RawClient::connect(broker.addr).await;
        admin.create_topic("orders", 1).await;
        admin.produce("orders", 0, &[b"a", b"b", b"c"]).await;
        admin.fetch("orders", 0, 0, 0).await;
        let again = CreateTopicRequest {
            topic: "orders".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        assert!(matches!(
            admin.call(again.into()).await,
            ResponseBody::Error(_)
        ));
        let create = CreateGroupRequest {
            topic: "orders".into(),
            group: "billing".into(),
            settings: GroupSettings::default(),
        };
        admin.ok(create.into()).await;
        let consumer = admin.join_group("orders", "billing", "c1").await;
        let mut deliveries = Vec::new();
        let deadline = Instant::now() + WAIT;
        while deliveries.len() < 3 && Instant::now() < deadline {
            let more = 3 - deliveries.len() as u32;
            deliveries.extend(
                admin
                    .receive("orders", "billing", consumer, more, 1_000)
                    .await,
            );
        }
        assert_eq!(deliveries.len(), 3, "{deliveries:?}");
        let actions = [SettleAction::Ack, SettleAction::Nack, SettleAction::Reject];
        let items = deliveries
            .iter()
            .zip(actions)
            .map(|(d, action)| SettleItem {
                partition: d.partition,
                offset: d.offset,
                attempt: d.attempt,
                action,
                delay_ms: 60_000,
                reason: "packaging test".into(),
            })
            .collect();
        let settle = SettleRequest {
            topic: "orders".into(),
            group: "billing".into(),
            consumer_id: consumer,
            items,
        };
        admin.ok(settle.into()).await;
        // One connection more than --max-connections 1: refused.
        let _refused = std::net::TcpStream::connect(broker.addr).expect("connect");
        wait_until(WAIT, "a refused connection to be counted", || {
            metric(
                broker.http,
                "pigeon_connections_refused_total{reason=\"max_connections\"}",
            ) >= 1.0
        });
    });
}

#[test]
fn dashboard_is_well_formed() {
    let dashboard: Value = serde_json::from_str(&repo_file(DASHBOARD)).expect("dashboard JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64()), "duplicate id: {title}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                && grid["h"].as_u64() > Some(0),
            "gridPos of {title}: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        let refs: BTreeSet<_> = targets.iter().map(|t| t["refId"].as_str()).collect();
        assert_eq!(refs.len(), targets.len(), "refIds of {title}");
        assert!(refs.iter().all(Option::is_some), "refIds of {title}");
    }
    for query in dashboard_queries(&dashboard) {
        promql_metric_names(&query).unwrap_or_else(|e| panic!("{e} in {query}"));
        for variable in ["$instance", "$topic", "$group", "$datasource"] {
            assert!(
                !query.contains(variable) || variables.contains(&variable[1..]),
                "{query} uses {variable}, which is not defined"
            );
        }
    }
}

#[test]
fn dashboard_queries_only_metrics_the_broker_exports_or_that_are_agreed() {
    let dashboard: Value = serde_json::from_str(&repo_file(DASHBOARD)).expect("dashboard JSON");
    let mut queried = BTreeSet::new();
    for query in dashboard_queries(&dashboard) {
        queried.extend(promql_metric_names(&query).unwrap_or_else(|e| panic!("{e} in {query}")));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&tmp.path().join("data"), &["--max-connections", "1"]);
    exercise(&broker);
    let (status, exposition) = http_get(broker.http, "/metrics");
    assert_eq!(status, 200, "{exposition}");
    let exported = help_names(&exposition);

    let mut families: BTreeMap<&str, &str> = BTreeMap::new();
    let mut unknown = Vec::new();
    for name in &queried {
        if let Some(family) = family_of(name, |n| exported.contains(n)) {
            families.insert(family, "exported");
        } else if let Some(family) = family_of(name, |n| AGREED_NOT_YET_EXPORTED.contains(&n)) {
            families.insert(family, "agreed, not exported yet");
        } else {
            unknown.push(name.as_str());
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the broker does not export (after a produce, fetch, error, refused connection and group activity) and that were not agreed: {unknown:?}\nexported: {exported:?}"
    );
    let missing: Vec<_> = MUST_SHOW
        .iter()
        .filter(|m| !families.contains_key(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard does not show {missing:?}"
    );
    eprintln!("dashboard metric families: {families:#?}");
}

// ---------------------------------------------------------------------------
// systemd unit
// ---------------------------------------------------------------------------

const UNIT: &str = "packaging/systemd/pigeon-broker.service";

/// The unit's `[section] key=value` entries, in order (keys may repeat).
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        } else {
            panic!("{UNIT}: not a key=value line: {line:?}");
        }
    }
    entries
}

#[test]
fn systemd_unit_has_the_required_keys() {
    let entries = unit_entries(&repo_file(UNIT));
    let get = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |section: &str, key: &str| -> String {
        match get(section, key).as_slice() {
            [value] => (*value).to_owned(),
            other => panic!("{UNIT}: [{section}] {key} should be set once: {other:?}"),
        }
    };
    assert!(!one("Unit", "Description").is_empty());
    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    let exec = one("Service", "ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/pigeon-broker ")
            && exec.contains("--data-dir /var/lib/pigeon"),
        "ExecStart: {exec}"
    );
    assert_eq!(one("Service", "User"), "pigeon");
    assert_eq!(one("Service", "StateDirectory"), "pigeon");
    let files: u64 = one("Service", "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    // The broker wants max_connections (4096 by default) + 1024.
    assert!(files >= 4096 + 1024, "LimitNOFILE={files}");
    assert_eq!(one("Service", "Restart"), "on-failure");
    assert_eq!(one("Service", "RestartPreventExitStatus"), "2");
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "MemoryDenyWriteExecute",
    ] {
        assert!(
            !get("Service", hardening).is_empty(),
            "{hardening} is missing"
        );
    }
    // A reload is SIGHUP: present only while the broker handles it (the
    // default action of SIGHUP would kill it).
    let handles_hangup = repo_file("broker/src/main.rs").contains("SignalKind::hangup()");
    assert_eq!(
        !get("Service", "ExecReload").is_empty(),
        handles_hangup,
        "ExecReload must be present exactly when the broker handles SIGHUP"
    );
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
    let sysusers = repo_file("packaging/systemd/pigeon.sysusers");
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u pigeon ") && l.contains("/var/lib/pigeon")),
        "pigeon.sysusers creates the pigeon user"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "note: systemd-analyze is not installed here; only the structural check of {UNIT} ran"
        );
        return;
    };
    assert!(version.status.success(), "systemd-analyze --version");
    // verify checks that ExecStart exists: point it at the built broker.
    let broker = binary("pigeon-broker");
    let unit = repo_file(UNIT).replace(
        "ExecStart=/usr/local/bin/pigeon-broker",
        &format!("ExecStart={}", broker.display()),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("pigeon-broker.service");
    std::fs::write(&path, unit).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys are only warned about (exit 0): any line about our unit
    // is a failure.
    let about_unit: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("pigeon-broker.service"))
        .collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{stderr}",
        output.status
    );
}

// ---------------------------------------------------------------------------
// Container image definition
// ---------------------------------------------------------------------------

const DOCKERFILE: &str = "packaging/container/Dockerfile";

/// The Dockerfile's instructions: (keyword in upper case, arguments), with
/// continuation lines joined and comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(
        current.is_empty(),
        "{DOCKERFILE} ends inside a continued line"
    );
    instructions
}

/// `major.minor` of a version such as `1.95` or `1.95.0`.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The workspace's `rust-version` (root Cargo.toml).
fn workspace_rust_version() -> (u32, u32) {
    let manifest = repo_file("Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.starts_with("rust-version = "))
        .expect("rust-version in Cargo.toml");
    major_minor(line.trim_start_matches("rust-version = ").trim_matches('"'))
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_volume_and_health_check() {
    let instructions = dockerfile_instructions(&repo_file(DOCKERFILE));
    let stages: Vec<(usize, &str)> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, (_, a))| (i, a.as_str()))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let (_, build) = stages[0];
    let build_words: Vec<&str> = build.split_whitespace().collect();
    let [image, as_kw, build_name] = build_words[..] else {
        panic!("the build stage is named: FROM {build}");
    };
    assert!(as_kw.eq_ignore_ascii_case("as"), "FROM {build}");
    let rust_version = image
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .unwrap_or_else(|| panic!("the build stage uses the Rust image: FROM {build}"));
    assert!(
        major_minor(rust_version) >= workspace_rust_version(),
        "the Rust image {rust_version} is older than the workspace's rust-version"
    );
    let (runtime_at, runtime) = stages[stages.len() - 1];
    assert!(
        runtime.starts_with("debian:") && runtime.contains("-slim"),
        "the runtime stage is slim Debian: FROM {runtime}"
    );
    let final_stage = &instructions[runtime_at..];
    let args_of = |keyword: &str| -> Vec<&str> {
        final_stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert!(
        args_of("COPY")
            .iter()
            .any(|a| a.starts_with(&format!("--from={build_name} "))),
        "the runtime stage copies the binaries from {build_name}"
    );
    let user = args_of("USER")
        .last()
        .copied()
        .expect("USER in the runtime stage");
    let name = user.split(':').next().unwrap_or(user);
    assert!(!["root", "0"].contains(&name), "runs as root: USER {user}");
    assert!(
        args_of("VOLUME")
            .iter()
            .any(|v| v.contains("/var/lib/pigeon"))
    );
    let health = args_of("HEALTHCHECK");
    assert!(
        matches!(health.as_slice(), [h] if h.contains("CMD") && h.contains("/health")),
        "{health:?}"
    );
    let env = args_of("ENV").join(" ");
    for setting in [
        "PIGEON_DATA_DIR=/var/lib/pigeon",
        "PIGEON_LISTEN=0.0.0.0:",
        "PIGEON_HTTP=0.0.0.0:",
    ] {
        assert!(env.contains(setting), "ENV {setting}…: {env}");
    }
    assert_eq!(args_of("ENTRYPOINT"), [r#"["pigeon-broker"]"#]);
    let build_stage = &instructions[stages[0].0..stages[1].0];
    let run = build_stage
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, a)| a.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for needed in ["--locked", "-p pigeon-broker", "-p pigeon-cli"] {
        assert!(
            run.contains(needed),
            "the build runs cargo build with {needed}: {run}"
        );
    }
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).expect(".dockerignore");
    for excluded in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore excludes {excluded}"
        );
    }
}

/// The `HEALTHCHECK ... CMD [...]` exec form's words.
fn healthcheck_command() -> Vec<String> {
    let instructions = dockerfile_instructions(&repo_file(DOCKERFILE));
    let (_, args) = instructions
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .expect("HEALTHCHECK");
    let json = &args[args.find("CMD").expect("CMD") + 3..];
    serde_json::from_str(json.trim()).expect("HEALTHCHECK CMD in exec (JSON) form")
}

#[test]
fn dockerfile_healthcheck_passes_on_a_serving_broker_and_fails_without_one() {
    let command = healthcheck_command();
    let Ok(_) = Command::new(&command[0]).arg("-c").arg("true").status() else {
        eprintln!(
            "note: {} is not installed here; the HEALTHCHECK command was not run",
            command[0]
        );
        return;
    };
    let check = |http: &str| -> bool {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .env("PIGEON_HTTP", http)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the HEALTHCHECK command");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the HEALTHCHECK command hung");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(&tmp.path().join("data"), &[]);
    let http = format!("0.0.0.0:{}", broker.http.port());
    assert!(check(&http), "healthy while serving");
    assert_eq!(broker.terminate(), Some(0));
    assert!(!check(&http), "unhealthy once stopped");
}
