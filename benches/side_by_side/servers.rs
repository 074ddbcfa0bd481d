//! The peer servers' lifecycle: finding Debian's `redis-server` and
//! `nats-server`, starting each on a free loopback port with a fresh
//! temp data dir and the durability settings of the comparison, waiting
//! (with a deadline) until it serves, and killing it when its guard drops
//! (also when the run panics).
//!
//! Invariants: a [`Server`] owns its process and its data dir; dropping
//! it kills the process and then removes the dir. Nothing listens beyond
//! 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// How long a server may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which peer a [`Server`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `redis-server` with the AOF fsynced on every write.
    Redis,
    /// `nats-server` with JetStream.
    Nats,
}

impl Peer {
    /// The binary's name on `PATH`.
    pub fn binary_name(self) -> &'static str {
        match self {
            Peer::Redis => "redis-server",
            Peer::Nats => "nats-server",
        }
    }

    /// The environment variable that may name the binary's path.
    fn override_var(self) -> &'static str {
        match self {
            Peer::Redis => "PIGEON_BENCH_REDIS_SERVER",
            Peer::Nats => "PIGEON_BENCH_NATS_SERVER",
        }
    }
}

/// An installed peer: its binary, version and the durability it runs with.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Which peer.
    pub peer: Peer,
    /// The binary started for each run.
    pub binary: PathBuf,
    /// What `--version` says, on one line.
    pub version: String,
    /// For NATS: whether this server accepts `sync_interval: always`
    /// (checked by asking it to test such a config); always true for Redis.
    pub sync_always: bool,
}

impl Installed {
    /// Finds `peer`'s binary (the override variable, else `PATH`) and asks
    /// it for its version and abilities; the error says why it is missing.
    pub fn find(peer: Peer) -> anyhow::Result<Installed> {
        let binary = match std::env::var_os(peer.override_var()) {
            Some(path) => PathBuf::from(path),
            None => on_path(peer.binary_name()).ok_or_else(|| {
                anyhow!(
                    "{} is not on PATH (on Debian: apt-get install {}, or set {})",
                    peer.binary_name(),
                    peer.binary_name(),
                    peer.override_var()
                )
            })?,
        };
        let output = Command::new(&binary)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let version = String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let sync_always = match peer {
            Peer::Redis => true,
            Peer::Nats => nats_accepts_sync_always(&binary)?,
        };
        Ok(Installed {
            peer,
            binary,
            version,
            sync_always,
        })
    }

    /// The durability settings a run uses, as a sentence for the report.
    pub fn durability(&self) -> String {
        match (self.peer, self.sync_always) {
            (Peer::Redis, _) => {
                "appendonly yes, appendfsync always (AOF fsynced before replies), RDB snapshots off"
                    .into()
            }
            (Peer::Nats, true) => {
                "JetStream file storage, sync_interval: always (fsync on every write)".into()
            }
            (Peer::Nats, false) => "JetStream file storage; this nats-server has no \
                 sync_interval option (it rejects `sync_interval: always`): PubAcks do not \
                 wait for any fsync (see docs/benchmarks.md)"
                .into(),
        }
    }

    /// Starts a fresh server in a new temp dir under `parent`.
    pub fn start(&self, parent: &Path) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(self.peer.binary_name())
            .tempdir_in(parent)?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(&self.binary);
        match self.peer {
            Peer::Redis => {
                command.current_dir(dir.path()).args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &dir.path().display().to_string(),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--protected-mode",
                    "yes",
                    "--daemonize",
                    "no",
                ]);
            }
            Peer::Nats => {
                let config = dir.path().join("nats.conf");
                std::fs::write(
                    &config,
                    nats_config(addr, &dir.path().join("jetstream"), self.sync_always),
                )?;
                command.arg("-c").arg(&config);
            }
        }
        let log = dir.path().join("server.log");
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.path().join("server.err"))?)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let mut server = Server {
            peer: self.peer,
            child,
            addr,
            dir,
        };
        server.await_serving()?;
        Ok(server)
    }
}

/// The NATS config: loopback only, JetStream in `store_dir`, and
/// `sync_interval: always` where the server has it.
fn nats_config(addr: SocketAddr, store_dir: &Path, sync_always: bool) -> String {
    let sync = if sync_always {
        "  sync_interval: always\n"
    } else {
        ""
    };
    format!(
        "listen: \"{addr}\"\njetstream {{\n  store_dir: \"{}\"\n{sync}}}\n",
        store_dir.display()
    )
}

/// Whether `nats-server -t` accepts a config with `sync_interval: always`.
fn nats_accepts_sync_always(binary: &Path) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("probe.conf");
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    std::fs::write(&config, nats_config(addr, &dir.path().join("js"), true))?;
    let status = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .arg("-t")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// The first `name` in a directory of `PATH`, then in the system `sbin`
/// directories (Debian puts `nats-server` in `/usr/sbin`, which a
/// non-root `PATH` may lack).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A running peer server. Killed, and its data dir removed, on drop.
pub struct Server {
    peer: Peer,
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data dir (and logs); removed after the process is dead.
    dir: tempfile::TempDir,
}

impl Server {
    /// Waits until the server answers its protocol's greeting.
    fn await_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before serving:\n{}",
                    self.peer.binary_name(),
                    self.log_text()
                );
            }
            if self.greets() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not serve within {START_TIMEOUT:?}:\n{}",
                    self.peer.binary_name(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One readiness probe: Redis answers PING with +PONG; NATS greets a
    /// new connection with an INFO line.
    fn greets(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        match self.peer {
            Peer::Redis => {
                if stream.write_all(b"PING\r\n").is_err() {
                    return false;
                }
                let _ = BufReader::new(stream).read_line(&mut line);
                line.starts_with("+PONG")
            }
            Peer::Nats => {
                let _ = BufReader::new(stream).read_line(&mut line);
                line.starts_with("INFO ")
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        for name in ["server.log", "server.err"] {
            if let Ok(mut file) = std::fs::File::open(self.dir.path().join(name)) {
                let _ = file.read_to_string(&mut text);
            }
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
