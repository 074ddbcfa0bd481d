//! `pigeon-broker`: the Pigeon broker server. See `pigeon-broker --help`.
//!
//! Under systemd (`Type=notify`, `packaging/systemd/pigeon-broker.service`)
//! it tells the service manager `READY=1` once both listeners are bound and
//! every topic and group is open, and `STOPPING=1` when the drain begins;
//! without `NOTIFY_SOCKET` in the environment these notifications do
//! nothing.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pigeon_broker::config::{BrokerCommand, BrokerConfig, Flags};
use pigeon_broker::io::StdFs;
use pigeon_broker::log::SystemClock;
use pigeon_broker::security::metrics::tls_reloaded;
use pigeon_broker::security::tls::ServerTls;
use pigeon_broker::service::Broker;
use pigeon_broker::{http, metrics};
use pigeon_broker::{resp, server};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Some(BrokerCommand::HashPassword { scram, toml }) = flags.command {
        return hash_password(scram, toml);
    }
    let config = match BrokerConfig::load(flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pigeon-broker: {e}");
            return ExitCode::from(2);
        }
    };
    // Checked when the settings were loaded: a bad filter stopped us there.
    let filter = tracing_subscriber::EnvFilter::new(&config.log_filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(ansi).init();
    }
    // Before any log is opened: every partition log and group journal is
    // written by this pool.
    pigeon_broker::log::pool::WriterPool::init(config.writer_threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pigeon-broker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pigeon-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let prometheus = match metrics::install() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics are disabled");
            None
        }
    };
    let started = std::time::Instant::now();
    raise_open_file_limit(config.max_connections);
    // Before the data directory: bad TLS files stop the start at once.
    let tls = match config.tls.clone() {
        Some(files) => Some(Arc::new(
            ServerTls::load(files).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let broker = Broker::open(config, Arc::new(StdFs), Arc::new(SystemClock))
        .await
        .map_err(anyhow::Error::msg)?;
    broker.start_audit().await.map_err(anyhow::Error::msg)?;
    let config = &broker.config;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another broker running?)",
            config.listen
        )
    })?;
    let http_listener = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot serve HTTP on {}", config.http))?;
    let resp_listener = match config.resp {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot serve RESP on {addr} (set --resp off to turn the Redis listener off)")
        })?),
        None => None,
    };
    let resp_addr = match &resp_listener {
        Some(l) => l.local_addr()?.to_string(),
        None => "off".to_owned(),
    };
    // Installed before the broker says it serves, so that a SIGHUP from then
    // on reloads instead of killing it, and a SIGTERM or SIGINT drains it
    // (installed in the task that waits for them, a signal sent right after
    // the serving line could come first and kill the broker uncleanly).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    let stops = StopSignals::install().context("cannot install the SIGTERM and SIGINT handlers")?;
    tracing::info!(
        listen = %listener.local_addr()?, http = %http_listener.local_addr()?, resp = %resp_addr, data_dir = %config.data_dir.display(),
        fsync = %config.log.fsync, topics = broker.topics.list().len(), startup_ms = started.elapsed().as_millis() as u64,
        tls = tls.is_some(), "pigeon-broker is serving"
    );
    warn_if_exposed(config);
    // Connections that arrive now wait in the listeners' backlogs until the
    // accept loops below run: the broker already answers.
    notify_service_manager(sd_notify::NotifyState::Ready);
    let broker = Arc::new(broker);
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(http::run(
        broker.clone(),
        prometheus,
        http_listener,
        tls.clone(),
        http_stop.clone(),
    ));
    let signals = tokio::spawn(wait_for_signal(broker.clone(), stops));
    let reloads = tokio::spawn(reload_at_sighup(broker.clone(), tls.clone(), hangups));
    let sweeper = broker.clone();
    let members = tokio::spawn(async move {
        let every = std::time::Duration::from_secs(1);
        sweeper.expire_idle_members_until_shutdown(every).await;
    });
    let resp = resp_listener.map(|l| tokio::spawn(resp::run(broker.clone(), l, tls.clone())));
    server::run(broker.clone(), listener, tls).await;
    if let Some(resp) = resp {
        let _ = resp.await;
    }
    // Groups first (their engines may still write dead letters into
    // topics), then the partition logs.
    broker.close().await;
    // /health answered 503 through the drain; now it stops.
    http_stop.cancel();
    let _ = http.await;
    let _ = members.await;
    signals.abort();
    reloads.abort();
    tracing::info!("pigeon-broker stopped cleanly");
    Ok(())
}

/// The handlers of the signals that stop the broker.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Begins the broker's shutdown at SIGTERM or SIGINT: it stops serving
/// (`/health` answers 503 from then on) and drains.
async fn wait_for_signal(broker: Arc<Broker>, mut stops: StopSignals) {
    tokio::select! {
        _ = stops.term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = stops.int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    broker.begin_shutdown();
    notify_service_manager(sd_notify::NotifyState::Stopping);
}

/// Re-reads the TLS certificate, key and client CA, and the users file, at
/// every SIGHUP: new handshakes and authentications use them, established
/// connections go on; a failed reload is logged and the files in use stay.
/// It never stops the broker.
async fn reload_at_sighup(
    broker: Arc<Broker>,
    tls: Option<Arc<ServerTls>>,
    mut hangups: tokio::signal::unix::Signal,
) {
    while hangups.recv().await.is_some() {
        match broker.reload_users() {
            None => {}
            Some(Ok(users)) => tracing::info!(
                users,
                "SIGHUP: users file reloaded; new authentications use it"
            ),
            Some(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: the users file could not be reloaded; the users in use stay")
            }
        }
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: no TLS files to reload");
            continue;
        };
        match tls.reload() {
            Ok(()) => {
                tls_reloaded(true);
                tracing::info!(
                    "SIGHUP: TLS certificate, key and client CA reloaded; new connections use them"
                );
            }
            Err(e) => {
                tls_reloaded(false);
                tracing::error!(error = %e, "SIGHUP: the TLS files could not be reloaded; the ones in use stay");
            }
        }
    }
}

/// Warns when a listener is reachable from other hosts without TLS or
/// without users.
fn warn_if_exposed(config: &pigeon_broker::config::BrokerConfig) {
    let missing = match (config.tls.is_some(), config.users.is_some()) {
        (true, true) => return,
        (false, true) => "without TLS: passwords are safe (SCRAM) but the traffic is readable",
        (true, false) => "without users: anyone who can reach it can read and change everything",
        (false, false) => {
            "without TLS or users: anyone who can reach it can read and change everything"
        }
    };
    let resp = config.resp.map(|addr| ("resp", addr));
    for (name, addr) in [("listen", config.listen), ("http", config.http)]
        .into_iter()
        .chain(resp)
    {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the {name} listener is reachable from other hosts {missing}; turn on TLS (--tls-cert, --tls-key) and users (--users), or listen on 127.0.0.1 (see docs/security.md)");
        }
    }
}

/// `pigeon-broker hash-password [--scram | --toml]`: reads one password
/// from standard input (its first line, without the line ending) and
/// prints what the users file stores for it. The password itself is
/// never printed.
fn hash_password(scram: bool, toml: bool) -> ExitCode {
    use pigeon_broker::security::{password, scram::ScramVerifier};
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprintln!(
            "pigeon-broker: type the password and press Enter (it is shown as you type; prefer `pigeon-broker hash-password < file`)"
        );
    }
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("pigeon-broker: cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let secret = line.strip_suffix('\n').unwrap_or(&line);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        eprintln!(
            "pigeon-broker: the password is empty; give it on standard input, e.g. pigeon-broker hash-password < password.txt"
        );
        return ExitCode::from(2);
    }
    let phc = (!scram)
        .then(|| password::hash(secret.as_bytes()))
        .transpose();
    let verifier = (scram || toml)
        .then(|| ScramVerifier::generate(secret.as_bytes()))
        .transpose();
    match (phc, verifier) {
        (Ok(Some(phc)), Ok(None)) => println!("{phc}"),
        (Ok(None), Ok(Some(verifier))) => println!("{}", verifier.to_text()),
        (Ok(Some(phc)), Ok(Some(verifier))) => {
            println!("password_hash = \"{phc}\"");
            println!("scram_sha256 = \"{}\"", verifier.to_text());
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("pigeon-broker: {e}");
            return ExitCode::FAILURE;
        }
        (Ok(None), Ok(None)) => return ExitCode::FAILURE,
    }
    ExitCode::SUCCESS
}

/// Sends `state` to the service manager named by `NOTIFY_SOCKET` (systemd's
/// `Type=notify`); does nothing when the variable is unset. A failure is
/// logged, never fatal: the broker serves either way, and systemd reports a
/// missing `READY=1` as a start timeout.
fn notify_service_manager(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(std::slice::from_ref(&state)) {
        tracing::warn!(error = %e, notification = %state,
            "cannot notify the service manager at NOTIFY_SOCKET (check the socket path and the unit's NotifyAccess)");
    }
}

/// File descriptors kept for segments, indexes, journals and the listeners
/// besides one per connection.
const SPARE_FILE_DESCRIPTORS: u64 = 1024;

/// Raises the soft limit on open files to the hard limit (as many servers
/// do), so that `max_connections` connections can be served; warns if even
/// the hard limit is too low, since accepting then fails with "too many open
/// files" before `max_connections` is reached.
fn raise_open_file_limit(max_connections: u32) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = u64::from(max_connections) + SPARE_FILE_DESCRIPTORS;
    // `rlim_t` is u64 on 64-bit Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    let open_files = limit.rlim_cur as u64;
    if open_files < needed {
        tracing::warn!(
            open_files,
            max_connections,
            "the open-file limit is below max_connections + {SPARE_FILE_DESCRIPTORS}: connections may fail with \"too many open files\" before max_connections; raise the limit (ulimit -n) or lower max_connections"
        );
    }
}
