//! Broker settings: built-in defaults, then a TOML file (`--config`), then
//! `PIGEON_*` environment variables, then command-line flags; each later
//! source overrides the earlier ones, key by key.
//!
//! Every key of the TOML file has a flag of the same name (`segment_bytes` →
//! `--segment-bytes`) and an environment variable (`PIGEON_SEGMENT_BYTES`):
//! all three come from one declaration per key in [`Settings`].
//! An unknown key or a bad value is refused at start with a message naming
//! the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::caps::{CapSettings, Caps};
use crate::log::{FsyncPolicy, LogConfig, OpenSegments};
use crate::security::tls::TlsFiles;

/// Declares [`Settings`] from one list of keys: each key is a field (its
/// TOML name), a flag (`--segment-bytes`) and an environment variable
/// (`PIGEON_SEGMENT_BYTES`), and [`Settings::overlay`] covers every key.
macro_rules! settings {
    ($($(#[$meta:meta])* $key:ident: $ty:ty,)*) => {
        /// `pigeon-broker`: the Pigeon message broker.
        ///
        /// Settings come from defaults, then the TOML file given with --config, then
        /// PIGEON_* environment variables, then these flags. Every flag is also a key
        /// of the TOML file (with underscores: --segment-bytes is segment_bytes).
        #[derive(Debug, Default, Clone, PartialEq, Parser, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[command(name = "pigeon-broker", version, about, long_about)]
        pub struct Settings {
            /// TOML file with settings (keys as the flags below, with underscores).
            #[arg(long, env = "PIGEON_CONFIG", value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            /// A command instead of serving.
            #[command(subcommand)]
            #[serde(skip)]
            pub command: Option<BrokerCommand>,
            $($(#[$meta])* pub $key: $ty,)*
        }

        impl Settings {
            /// These settings over `file`: each key set here wins.
            pub fn overlay(self, file: Settings) -> Settings {
                Settings {
                    config: self.config.or(file.config),
                    command: self.command.or(file.command),
                    $($key: self.$key.or(file.$key),)*
                }
            }
        }
    };
}

settings! {
    /// Directory holding topics, segments and metadata [default: ./pigeon-data].
    #[arg(long, env = "PIGEON_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the binary protocol [default: 127.0.0.1:7420].
    #[arg(long, env = "PIGEON_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the HTTP endpoints /health and /metrics [default: 127.0.0.1:7421].
    #[arg(long, env = "PIGEON_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// Address of the Redis Streams (RESP) listener, or off [default: 127.0.0.1:7422].
    #[arg(long, env = "PIGEON_RESP", value_name = "ADDR")]
    resp: Option<String>,
    /// Whether FLUSHALL and FLUSHDB over RESP may delete every topic (true or false) [default: false].
    #[arg(long, env = "PIGEON_RESP_ALLOW_FLUSH", value_name = "BOOL")]
    resp_allow_flush: Option<bool>,
    /// Durability: always (ack after fdatasync, group commit), interval:<ms>, or never [default: always].
    #[arg(long, env = "PIGEON_FSYNC", value_name = "POLICY")]
    fsync: Option<String>,
    /// Under fsync=always, write zeros ahead of a busy partition's appends (64 small commits a second or more), up to 256 KiB past its data, so that its fdatasyncs write no file-size update: shorter syncs, at the cost of the zeros' writes and an active segment file longer than its data until it rolls or the broker stops cleanly (true or false) [default: false].
    #[arg(long, env = "PIGEON_PREALLOCATE", value_name = "BOOL")]
    preallocate: Option<bool>,
    /// A segment rolls when it would grow past this many bytes [default: 134217728].
    #[arg(long, env = "PIGEON_SEGMENT_BYTES", value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// A segment rolls at the first append once it is this old [default: 604800000, 7 days].
    #[arg(long, env = "PIGEON_SEGMENT_MS", value_name = "MS")]
    segment_ms: Option<u64>,
    /// Default retention by age for topics that set none; 0 keeps forever [default: 604800000, 7 days].
    #[arg(long, env = "PIGEON_RETENTION_MS", value_name = "MS")]
    retention_ms: Option<u64>,
    /// Default retention by size per partition for topics that set none; 0 is unlimited [default: 0].
    #[arg(long, env = "PIGEON_RETENTION_BYTES", value_name = "BYTES")]
    retention_bytes: Option<u64>,
    /// Bytes of log between two sparse index entries [default: 4096].
    #[arg(long, env = "PIGEON_INDEX_INTERVAL_BYTES", value_name = "BYTES")]
    index_interval_bytes: Option<u32>,
    /// Bytes between recovery checkpoints: bounds the scan after a crash [default: 67108864].
    #[arg(long, env = "PIGEON_CHECKPOINT_INTERVAL_BYTES", value_name = "BYTES")]
    checkpoint_interval_bytes: Option<u64>,
    /// Idempotent producer state is dropped after this long without a batch [default: 604800000, 7 days].
    #[arg(long, env = "PIGEON_PRODUCER_EXPIRY_MS", value_name = "MS")]
    producer_expiry_ms: Option<u64>,
    /// Bytes of a group partition's journal between two snapshots of its delivery state: bounds what a restart replays and the journal on disk [default: 4194304].
    #[arg(long, env = "PIGEON_GROUP_SNAPSHOT_BYTES", value_name = "BYTES")]
    group_snapshot_bytes: Option<u64>,
    /// Most sealed segments' .log files open at once, broker-wide, and twice as many of their index maps; a colder one is closed (unmapped) and reopened by its next read (the active segments' files and maps are always open) [default: 1024].
    #[arg(long, env = "PIGEON_MAX_OPEN_SEGMENTS", value_name = "N")]
    max_open_segments: Option<u32>,
    /// Most threads that write every partition log and group journal: twice the CPUs (at least 4, at most 32, or this if lower) always run; above that, more start while commits wait for a thread and the recent commits are small (under 64 KiB on average: many partitions with a little each, bound by the disk's syncs), and exit after 10 s idle or once commits are large; an idle partition holds none [default: four times that core, at most 64].
    #[arg(long, env = "PIGEON_WRITER_THREADS", value_name = "N")]
    writer_threads: Option<u32>,
    /// Largest protocol frame accepted [default: 16777216].
    #[arg(long, env = "PIGEON_MAX_FRAME_BYTES", value_name = "BYTES")]
    max_frame_bytes: Option<u32>,
    /// Largest record batch accepted [default: 8388608].
    #[arg(long, env = "PIGEON_MAX_BATCH_BYTES", value_name = "BYTES")]
    max_batch_bytes: Option<u32>,
    /// Requests one connection may have in flight [default: 256].
    #[arg(long, env = "PIGEON_MAX_IN_FLIGHT_PER_CONNECTION", value_name = "N")]
    max_in_flight_per_connection: Option<u32>,
    /// Concurrent client connections served; one more is answered TooManyConnections and closed [default: 4096].
    #[arg(long, env = "PIGEON_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<u32>,
    /// A frame must arrive whole within this long of its first byte, else the connection is closed [default: 30000].
    #[arg(long, env = "PIGEON_FRAME_TIMEOUT_MS", value_name = "MS")]
    frame_timeout_ms: Option<u64>,
    /// Produce bytes per second (whole request frames) each user may send, all its connections together (each connection without users); token bucket, one second of burst; above it the broker throttles; 0 is unlimited [default: 0].
    #[arg(long, env = "PIGEON_PRODUCE_QUOTA_BYTES_PER_SEC", value_name = "BYTES")]
    produce_quota_bytes_per_sec: Option<u64>,
    /// Fetch and Receive response bytes per second each user may be sent, all its connections together (each connection without users); token bucket, one second of burst; above it the broker throttles; 0 is unlimited [default: 0].
    #[arg(long, env = "PIGEON_FETCH_QUOTA_BYTES_PER_SEC", value_name = "BYTES")]
    fetch_quota_bytes_per_sec: Option<u64>,
    /// How long shutdown waits for in-flight requests [default: 10000].
    #[arg(long, env = "PIGEON_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Log filter, e.g. info or pigeon_broker=debug [default: info].
    #[arg(long, env = "PIGEON_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Log lines as text (for people) or json (one object per line, for log
    /// collectors) [default: text].
    #[arg(long, env = "PIGEON_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// The broker's TLS certificate chain (PEM, leaf first); with --tls-key turns TLS on for every listener. Re-read at SIGHUP.
    #[arg(long, env = "PIGEON_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM). Re-read at SIGHUP.
    #[arg(long, env = "PIGEON_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// A CA bundle (PEM): clients must present a certificate signed by it; a certificate whose subject CN names a user authenticates as that user. Needs --tls-cert. Re-read at SIGHUP.
    #[arg(long, env = "PIGEON_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// The users file (TOML, see docs/security.md): turns authentication and permissions on. Re-read at SIGHUP.
    #[arg(long, env = "PIGEON_USERS", value_name = "FILE")]
    users: Option<PathBuf>,
    /// With users, a connection must authenticate within this long of its accept, else it is closed [default: 5000].
    #[arg(long, env = "PIGEON_AUTH_TIMEOUT_MS", value_name = "MS")]
    auth_timeout_ms: Option<u64>,
    /// Most topics, dead-letter topics included (the broker's own __ topics are not counted) [default: 10000].
    #[arg(long, env = "PIGEON_MAX_TOPICS", value_name = "N")]
    max_topics: Option<u32>,
    /// Most partitions of all topics together [default: 10000].
    #[arg(long, env = "PIGEON_MAX_PARTITIONS", value_name = "N")]
    max_partitions: Option<u32>,
    /// Most consumer groups of one topic [default: 1000].
    #[arg(long, env = "PIGEON_MAX_GROUPS_PER_TOPIC", value_name = "N")]
    max_groups_per_topic: Option<u32>,
    /// Most consumers joined to one group at once [default: 1000].
    #[arg(long, env = "PIGEON_MAX_MEMBERS_PER_GROUP", value_name = "N")]
    max_members_per_group: Option<u32>,
    /// Most producer names kept; a name unused for producer_expiry_ms expires [default: 100000].
    #[arg(long, env = "PIGEON_MAX_PRODUCER_NAMES", value_name = "N")]
    max_producer_names: Option<u32>,
    /// Most connections from one IP address, both listeners together [default: 256].
    #[arg(long, env = "PIGEON_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    max_connections_per_peer: Option<u32>,
    /// A connection that sends no request for this long (with none in flight) is closed; 0 never [default: 600000].
    #[arg(long, env = "PIGEON_IDLE_TIMEOUT_MS", value_name = "MS")]
    idle_timeout_ms: Option<u64>,
}

/// What `pigeon-broker` does instead of serving.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum BrokerCommand {
    /// Read a password from standard input (one line) and print its argon2id
    /// hash, a PHC string for the users file's password_hash.
    HashPassword {
        /// Print the SCRAM-SHA-256 verifier (for scram_sha256) instead.
        #[arg(long, conflicts_with = "toml")]
        scram: bool,
        /// Print both, as the two TOML lines password_hash = ... and
        /// scram_sha256 = ....
        #[arg(long)]
        toml: bool,
    },
}

/// The settings as a config file spells them (every key optional).
pub type FileConfig = Settings;

/// The settings as flags and environment variables give them.
pub type Flags = Settings;

/// The broker's effective settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Root of the data directory.
    pub data_dir: PathBuf,
    /// Protocol listener.
    pub listen: SocketAddr,
    /// HTTP listener.
    pub http: SocketAddr,
    /// Redis Streams (RESP) listener; `None`: off.
    pub resp: Option<SocketAddr>,
    /// Whether `FLUSHALL` / `FLUSHDB` over RESP delete every topic (else
    /// they are refused).
    pub resp_allow_flush: bool,
    /// Defaults for every partition log.
    pub log: LogConfig,
    /// Journal bytes between two snapshots of a group partition's state.
    pub group_snapshot_bytes: u64,
    /// Most threads of the log writer pool (`crate::log::pool`).
    pub writer_threads: usize,
    /// Largest frame.
    pub max_frame_bytes: u32,
    /// Requests in flight per connection.
    pub max_in_flight_per_connection: u32,
    /// Connections at once.
    pub max_connections: u32,
    /// Longest a frame may take to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// Produce bytes per second per user (per connection without users);
    /// `None`: unlimited. A user's own setting overrides it.
    pub produce_quota_bytes_per_sec: Option<u64>,
    /// Fetch and Receive response bytes per second per user (per
    /// connection without users); `None`: unlimited. A user's own setting
    /// overrides it.
    pub fetch_quota_bytes_per_sec: Option<u64>,
    /// Longest wait for in-flight work at shutdown.
    pub shutdown_timeout: Duration,
    /// Log filter.
    pub log_filter: String,
    /// Log lines as JSON objects (else text).
    pub log_json: bool,
    /// TLS for every listener; `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    /// The users file; `None`: no authentication, no permissions.
    pub users: Option<PathBuf>,
    /// How long a connection has to authenticate (with users).
    pub auth_timeout: Duration,
    /// What one client can make the broker hold (see `crate::caps`).
    pub caps: Caps,
}

/// A setting that could not be used, naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl BrokerConfig {
    /// Reads the file named by the flags (if any), applies the flags, checks
    /// every value.
    pub fn load(flags: Flags) -> Result<BrokerConfig, ConfigError> {
        let file = match &flags.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                parse_file(&text)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?
            }
        };
        BrokerConfig::from_file_config(flags.overlay(file))
    }

    /// Checks and completes settings.
    pub fn from_file_config(c: FileConfig) -> Result<BrokerConfig, ConfigError> {
        let defaults = LogConfig::default();
        let fsync: FsyncPolicy = match c.fsync.as_deref() {
            None => FsyncPolicy::Always,
            Some(s) => s.parse().map_err(|e| ConfigError(format!("fsync: {e}")))?,
        };
        let log = LogConfig {
            segment_bytes: c.segment_bytes.unwrap_or(defaults.segment_bytes),
            segment_ms: c.segment_ms.unwrap_or(defaults.segment_ms),
            index_interval_bytes: c
                .index_interval_bytes
                .unwrap_or(defaults.index_interval_bytes),
            retention_ms: match c.retention_ms {
                None => defaults.retention_ms,
                Some(0) => None,
                Some(ms) => Some(ms),
            },
            retention_bytes: c.retention_bytes.filter(|b| *b > 0),
            fsync,
            preallocate: c.preallocate.unwrap_or(defaults.preallocate),
            max_batch_bytes: c.max_batch_bytes.unwrap_or(defaults.max_batch_bytes),
            checkpoint_interval_bytes: c
                .checkpoint_interval_bytes
                .unwrap_or(defaults.checkpoint_interval_bytes),
            producer_expiry_ms: c.producer_expiry_ms.unwrap_or(defaults.producer_expiry_ms),
            open_segments: match c.max_open_segments {
                None => defaults.open_segments,
                Some(n @ 1..=1_000_000) => OpenSegments::new(n as usize),
                Some(n) => {
                    return Err(ConfigError(format!(
                        "max_open_segments is {n}; it must be from 1 to 1000000"
                    )));
                }
            },
            idle_checkpoint_ms: defaults.idle_checkpoint_ms,
        };
        log.validate().map_err(ConfigError)?;
        let max_frame_bytes = c.max_frame_bytes.unwrap_or(16 * 1024 * 1024);
        if max_frame_bytes < 1024 || max_frame_bytes < log.max_batch_bytes {
            return Err(ConfigError(format!(
                "max_frame_bytes is {max_frame_bytes}; it must be at least 1024 and at least max_batch_bytes ({})",
                log.max_batch_bytes
            )));
        }
        let positive = |key: &str, value: Option<u32>, default: u32| match value {
            Some(0) => Err(ConfigError(format!("{key} must be above 0"))),
            v => Ok(v.unwrap_or(default)),
        };
        let frame_timeout_ms = c.frame_timeout_ms.unwrap_or(30_000);
        if !(10..=3_600_000).contains(&frame_timeout_ms) {
            return Err(ConfigError(format!(
                "frame_timeout_ms is {frame_timeout_ms}; it must be from 10 to 3600000 (one hour)"
            )));
        }
        let produce_quota_bytes_per_sec =
            quota_rate("produce_quota_bytes_per_sec", c.produce_quota_bytes_per_sec)
                .map_err(ConfigError)?;
        let fetch_quota_bytes_per_sec =
            quota_rate("fetch_quota_bytes_per_sec", c.fetch_quota_bytes_per_sec)
                .map_err(ConfigError)?;
        let group_snapshot_bytes = c
            .group_snapshot_bytes
            .unwrap_or(crate::delivery::DEFAULT_SNAPSHOT_EVERY_BYTES);
        if group_snapshot_bytes < 4096 {
            return Err(ConfigError(format!(
                "group_snapshot_bytes is {group_snapshot_bytes}; it must be at least 4096"
            )));
        }
        let writer_threads = match c.writer_threads {
            None => crate::log::pool::default_most(),
            Some(n @ 1..=1024) => n as usize,
            Some(n) => {
                return Err(ConfigError(format!(
                    "writer_threads is {n}; it must be from 1 to 1024"
                )));
            }
        };
        Ok(BrokerConfig {
            group_snapshot_bytes,
            writer_threads,
            data_dir: c.data_dir.unwrap_or_else(|| PathBuf::from("./pigeon-data")),
            listen: address("listen", c.listen.as_deref().unwrap_or("127.0.0.1:7420"))?,
            http: address("http", c.http.as_deref().unwrap_or("127.0.0.1:7421"))?,
            resp: match c.resp.as_deref().unwrap_or("127.0.0.1:7422") {
                "off" => None,
                addr => Some(address("resp", addr)?),
            },
            resp_allow_flush: c.resp_allow_flush.unwrap_or(false),
            log,
            max_frame_bytes,
            max_in_flight_per_connection: positive(
                "max_in_flight_per_connection",
                c.max_in_flight_per_connection,
                256,
            )?,
            max_connections: positive("max_connections", c.max_connections, 4096)?,
            frame_timeout: Duration::from_millis(frame_timeout_ms),
            produce_quota_bytes_per_sec,
            fetch_quota_bytes_per_sec,
            shutdown_timeout: Duration::from_millis(c.shutdown_timeout_ms.unwrap_or(10_000)),
            tls: tls_files(c.tls_cert, c.tls_key, c.tls_client_ca)?,
            users: c.users,
            auth_timeout: auth_timeout(c.auth_timeout_ms)?,
            caps: Caps::from_settings(CapSettings {
                max_topics: c.max_topics,
                max_partitions: c.max_partitions,
                max_groups_per_topic: c.max_groups_per_topic,
                max_members_per_group: c.max_members_per_group,
                max_producer_names: c.max_producer_names,
                max_connections_per_peer: c.max_connections_per_peer,
                idle_timeout_ms: c.idle_timeout_ms,
            })
            .map_err(ConfigError)?,
            log_filter: log_filter(c.log)?,
            log_json: match c.log_format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "log_format: {other:?} is not a log format; use text or json"
                    )));
                }
            },
        })
    }
}

/// A byte-rate quota as set (`key` names it): 0 or unset is unlimited
/// (`None`), else at least 1024 bytes per second. The users file's
/// per-user quotas are checked by the same rule.
pub fn quota_rate(key: &str, rate: Option<u64>) -> Result<Option<u64>, String> {
    match rate {
        None | Some(0) => Ok(None),
        Some(rate) if rate < 1024 => Err(format!(
            "{key} is {rate}; it must be 0 (unlimited) or at least 1024"
        )),
        Some(rate) => Ok(Some(rate)),
    }
}

/// What [`BrokerConfig::settings_in_effect`] shows instead of a secret.
pub const HIDDEN: &str = "(hidden)";

/// Whether a setting holds a secret (a password, a token, key material):
/// its value is never shown (`broker describe`) or logged. No setting is
/// secret today; the rule is here so that one added later is hidden
/// without anyone remembering to.
pub fn is_secret(key: &str) -> bool {
    ["password", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with("_key")
}

impl BrokerConfig {
    /// Every setting in effect, by its config-file key, as the config file
    /// would spell it (`0` for "no limit"), secrets replaced by
    /// [`HIDDEN`]: what `pigeon broker describe` shows.
    pub fn settings_in_effect(&self) -> Vec<(&'static str, String)> {
        let log = &self.log;
        let or_zero = |v: Option<u64>| v.unwrap_or(0).to_string();
        let ms = |d: Duration| d.as_millis().to_string();
        let settings = [
            ("data_dir", self.data_dir.display().to_string()),
            ("listen", self.listen.to_string()),
            ("http", self.http.to_string()),
            (
                "resp",
                self.resp
                    .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            ),
            ("resp_allow_flush", self.resp_allow_flush.to_string()),
            ("fsync", log.fsync.to_string()),
            ("preallocate", log.preallocate.to_string()),
            ("segment_bytes", log.segment_bytes.to_string()),
            ("segment_ms", log.segment_ms.to_string()),
            ("retention_ms", or_zero(log.retention_ms)),
            ("retention_bytes", or_zero(log.retention_bytes)),
            ("index_interval_bytes", log.index_interval_bytes.to_string()),
            (
                "checkpoint_interval_bytes",
                log.checkpoint_interval_bytes.to_string(),
            ),
            ("producer_expiry_ms", log.producer_expiry_ms.to_string()),
            (
                "group_snapshot_bytes",
                self.group_snapshot_bytes.to_string(),
            ),
            ("writer_threads", self.writer_threads.to_string()),
            (
                "max_open_segments",
                log.open_segments.capacity().to_string(),
            ),
            ("max_frame_bytes", self.max_frame_bytes.to_string()),
            ("max_batch_bytes", log.max_batch_bytes.to_string()),
            (
                "max_in_flight_per_connection",
                self.max_in_flight_per_connection.to_string(),
            ),
            ("max_connections", self.max_connections.to_string()),
            ("frame_timeout_ms", ms(self.frame_timeout)),
            (
                "produce_quota_bytes_per_sec",
                or_zero(self.produce_quota_bytes_per_sec),
            ),
            (
                "fetch_quota_bytes_per_sec",
                or_zero(self.fetch_quota_bytes_per_sec),
            ),
            ("shutdown_timeout_ms", ms(self.shutdown_timeout)),
            (
                "tls_cert",
                path_or_unset(self.tls.as_ref().map(|t| &t.cert)),
            ),
            ("tls_key", path_or_unset(self.tls.as_ref().map(|t| &t.key))),
            (
                "tls_client_ca",
                path_or_unset(self.tls.as_ref().and_then(|t| t.client_ca.as_ref())),
            ),
            ("users", path_or_unset(self.users.as_ref())),
            ("auth_timeout_ms", ms(self.auth_timeout)),
            ("log", self.log_filter.clone()),
            (
                "log_format",
                if self.log_json { "json" } else { "text" }.to_owned(),
            ),
        ];
        settings
            .into_iter()
            .chain(self.caps.in_effect())
            .map(|(key, value)| {
                let shown = if is_secret(key) {
                    HIDDEN.to_owned()
                } else {
                    value
                };
                (key, shown)
            })
            .collect()
    }
}

/// A file setting as `broker describe` shows it: its path, or `unset`.
fn path_or_unset(path: Option<&PathBuf>) -> String {
    path.map_or_else(|| "unset".to_owned(), |p| p.display().to_string())
}

/// The log filter, checked: a bad one stops the broker at start instead of
/// silently logging at another level.
fn log_filter(value: Option<String>) -> Result<String, ConfigError> {
    let filter = value.unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        ConfigError(format!(
            "log: {filter:?} is not a log filter ({e}); use a level such as info, or directives such as info,pigeon_broker=debug"
        ))
    })?;
    Ok(filter)
}

/// The time a connection has to authenticate: 100 ms to 10 minutes.
fn auth_timeout(ms: Option<u64>) -> Result<Duration, ConfigError> {
    let ms = ms.unwrap_or(5_000);
    if !(100..=600_000).contains(&ms) {
        return Err(ConfigError(format!(
            "auth_timeout_ms is {ms}; it must be from 100 to 600000 (ten minutes)"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// The TLS files: a certificate and a key together, a client CA only
/// with them.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => Err(ConfigError(
            "tls_client_ca needs tls_cert and tls_key: client certificates are asked for only over TLS".into(),
        )),
        (Some(_), None) => Err(ConfigError(
            "tls_cert is set without tls_key; give both (PEM files) to turn TLS on".into(),
        )),
        (None, Some(_)) => Err(ConfigError(
            "tls_key is set without tls_cert; give both (PEM files) to turn TLS on".into(),
        )),
    }
}

/// Parses the TOML text of a config file.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn address(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError(format!(
            "{key}: {value:?} is not an IP address with a port, such as 127.0.0.1:7420"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("pigeon-broker").chain(args.iter().copied()))
            .expect("flags")
    }

    #[test]
    fn defaults_match_the_design() {
        let config = BrokerConfig::from_file_config(FileConfig::default()).expect("defaults");
        assert_eq!(config.data_dir, PathBuf::from("./pigeon-data"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:7420");
        assert_eq!(config.http.to_string(), "127.0.0.1:7421");
        assert_eq!(config.resp, Some("127.0.0.1:7422".parse().expect("addr")));
        assert_eq!(config.log.fsync, FsyncPolicy::Always);
        assert_eq!(config.log.segment_bytes, 128 * 1024 * 1024);
        assert_eq!(config.max_connections, 4096);
        assert_eq!(config.frame_timeout, Duration::from_secs(30));
        assert_eq!(
            config.produce_quota_bytes_per_sec, None,
            "no quota by default"
        );
    }

    #[test]
    fn the_fetch_quota_comes_from_file_or_flag_and_is_shown() {
        let file = parse_file("fetch_quota_bytes_per_sec = 65536").expect("toml");
        let config = BrokerConfig::from_file_config(flags(&[]).overlay(file.clone())).expect("ok");
        assert_eq!(config.fetch_quota_bytes_per_sec, Some(65536));
        let shown = config.settings_in_effect();
        assert!(shown.contains(&("fetch_quota_bytes_per_sec", "65536".to_owned())));
        let config = BrokerConfig::from_file_config(
            flags(&["--fetch-quota-bytes-per-sec", "0"]).overlay(file),
        )
        .expect("ok");
        assert_eq!(config.fetch_quota_bytes_per_sec, None, "0 is unlimited");
        let err = BrokerConfig::from_file_config(flags(&["--fetch-quota-bytes-per-sec", "1023"]))
            .expect_err("below 1024")
            .to_string();
        assert!(
            err.starts_with("fetch_quota_bytes_per_sec is 1023"),
            "{err}"
        );
    }

    #[test]
    fn the_produce_quota_and_frame_timeout_come_from_file_env_or_flag() {
        let file = parse_file("produce_quota_bytes_per_sec = 1048576\nframe_timeout_ms = 500")
            .expect("toml");
        let config = BrokerConfig::from_file_config(flags(&[]).overlay(file.clone())).expect("ok");
        assert_eq!(config.produce_quota_bytes_per_sec, Some(1 << 20));
        assert_eq!(config.frame_timeout, Duration::from_millis(500));
        let config = BrokerConfig::from_file_config(
            flags(&["--produce-quota-bytes-per-sec", "0"]).overlay(file),
        )
        .expect("ok");
        assert_eq!(config.produce_quota_bytes_per_sec, None, "0 is unlimited");
        let low = FileConfig {
            produce_quota_bytes_per_sec: Some(10),
            ..FileConfig::default()
        };
        let err = BrokerConfig::from_file_config(low)
            .expect_err("too low")
            .to_string();
        assert!(err.starts_with("produce_quota_bytes_per_sec"), "{err}");
        let zero = FileConfig {
            frame_timeout_ms: Some(0),
            ..FileConfig::default()
        };
        let err = BrokerConfig::from_file_config(zero)
            .expect_err("zero")
            .to_string();
        assert!(err.starts_with("frame_timeout_ms"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse_file("fsync = \"never\"\nsegment_bytes = 65536\nlisten = \"127.0.0.1:1\"")
            .expect("toml");
        let config =
            BrokerConfig::from_file_config(flags(&["--listen", "127.0.0.1:2"]).overlay(file))
                .expect("ok");
        assert_eq!(config.listen.to_string(), "127.0.0.1:2");
        assert_eq!(config.log.fsync, FsyncPolicy::Never);
        assert_eq!(config.log.segment_bytes, 65536);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse_file("segment_byte = 3").expect_err("unknown key");
        assert!(err.contains("segment_byte"), "{err}");
        let err = parse_file("segment_bytes = \"big\"").expect_err("bad type");
        assert!(err.contains("segment_bytes"), "{err}");
        let bad = FileConfig {
            fsync: Some("sometimes".into()),
            ..FileConfig::default()
        };
        let err = BrokerConfig::from_file_config(bad)
            .expect_err("bad fsync")
            .to_string();
        assert!(err.starts_with("fsync:"), "{err}");
        let bad = FileConfig {
            listen: Some("localhost".into()),
            ..FileConfig::default()
        };
        let err = BrokerConfig::from_file_config(bad)
            .expect_err("bad address")
            .to_string();
        assert!(err.starts_with("listen:"), "{err}");
    }

    #[test]
    fn max_open_segments_comes_from_file_or_flag_and_is_checked() {
        let config = BrokerConfig::from_file_config(FileConfig::default()).expect("defaults");
        assert_eq!(
            config.log.open_segments.capacity(),
            crate::log::DEFAULT_MAX_OPEN_SEGMENTS
        );
        let file = parse_file("max_open_segments = 64").expect("toml");
        let config = BrokerConfig::from_file_config(flags(&[]).overlay(file.clone())).expect("ok");
        assert_eq!(config.log.open_segments.capacity(), 64);
        let shown = config.settings_in_effect();
        assert!(shown.contains(&("max_open_segments", "64".to_owned())));
        let config =
            BrokerConfig::from_file_config(flags(&["--max-open-segments", "8"]).overlay(file))
                .expect("ok");
        assert_eq!(config.log.open_segments.capacity(), 8, "the flag wins");
        let err = BrokerConfig::from_file_config(flags(&["--max-open-segments", "0"]))
            .expect_err("zero")
            .to_string();
        assert!(err.starts_with("max_open_segments is 0"), "{err}");
    }

    #[test]
    fn a_bad_log_filter_is_refused_naming_the_key() {
        let bad = FileConfig {
            log: Some("pigeon_broker=loud".into()),
            ..FileConfig::default()
        };
        let err = BrokerConfig::from_file_config(bad)
            .expect_err("bad filter")
            .to_string();
        assert!(err.starts_with("log:"), "{err}");
        let good = FileConfig {
            log: Some("warn,pigeon_broker=debug".into()),
            ..FileConfig::default()
        };
        assert!(BrokerConfig::from_file_config(good).is_ok());
        let json = flags(&["--log-format", "json"]).overlay(FileConfig::default());
        assert!(BrokerConfig::from_file_config(json).expect("json").log_json);
        let bad = flags(&["--log-format", "xml"]).overlay(FileConfig::default());
        let err = BrokerConfig::from_file_config(bad)
            .expect_err("xml")
            .to_string();
        assert!(err.starts_with("log_format:"), "{err}");
    }

    #[test]
    fn every_setting_is_shown_in_effect_and_secrets_are_hidden() {
        use clap::CommandFactory;
        let config =
            BrokerConfig::from_file_config(flags(&["--segment-bytes", "65536"])).expect("config");
        let shown = config.settings_in_effect();
        let keys: Vec<&str> = shown.iter().map(|(k, _)| *k).collect();
        for arg in Settings::command().get_arguments() {
            let key = arg.get_id().as_str();
            if key != "config" && key != "help" && key != "version" {
                assert!(
                    keys.contains(&key),
                    "{key} is not shown by settings_in_effect"
                );
            }
        }
        assert!(shown.contains(&("segment_bytes", "65536".to_owned())));
        assert!(
            shown.contains(&("retention_bytes", "0".to_owned())),
            "0: unlimited"
        );
        assert!(shown.contains(&("fsync", "always".to_owned())));
        for secret in ["tls_key", "admin_password", "api_token", "sasl_secret"] {
            assert!(is_secret(secret), "{secret}");
        }
        for plain in ["max_connections", "segment_bytes", "log", "data_dir"] {
            assert!(!is_secret(plain), "{plain}");
        }
    }

    #[test]
    fn the_resp_listener_is_set_or_turned_off() {
        let off = BrokerConfig::from_file_config(
            flags(&["--resp", "off"]).overlay(FileConfig::default()),
        );
        assert_eq!(off.expect("off").resp, None);
        let file = parse_file("resp = \"127.0.0.1:6379\"").expect("toml");
        let config = BrokerConfig::from_file_config(flags(&[]).overlay(file)).expect("file");
        assert_eq!(config.resp, Some("127.0.0.1:6379".parse().expect("addr")));
        let bad = flags(&["--resp", "redis"]).overlay(FileConfig::default());
        let err = BrokerConfig::from_file_config(bad)
            .expect_err("bad")
            .to_string();
        assert!(err.starts_with("resp:"), "{err}");
    }

    #[test]
    fn tls_needs_a_certificate_and_a_key_and_a_client_ca_needs_both() {
        let file = parse_file("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"").expect("toml");
        let config = BrokerConfig::from_file_config(file).expect("ok");
        let tls = config.tls.expect("tls on");
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert_eq!(tls.client_ca, None);
        let half = parse_file("tls_cert = \"c.pem\"").expect("toml");
        let err = BrokerConfig::from_file_config(half)
            .expect_err("no key")
            .to_string();
        assert!(err.starts_with("tls_cert is set without tls_key"), "{err}");
        let ca_only = parse_file("tls_client_ca = \"ca.pem\"").expect("toml");
        let err = BrokerConfig::from_file_config(ca_only)
            .expect_err("ca only")
            .to_string();
        assert!(err.starts_with("tls_client_ca needs"), "{err}");
        let flags = flags(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ]);
        let config =
            BrokerConfig::from_file_config(flags.overlay(FileConfig::default())).expect("ok");
        assert_eq!(
            config.tls.and_then(|t| t.client_ca),
            Some(PathBuf::from("ca.pem"))
        );
    }

    #[test]
    fn users_and_the_auth_timeout_come_from_file_or_flag() {
        let file = parse_file("users = \"users.toml\"\nauth_timeout_ms = 2000").expect("toml");
        let config = BrokerConfig::from_file_config(file).expect("ok");
        assert_eq!(config.users, Some(PathBuf::from("users.toml")));
        assert_eq!(config.auth_timeout, Duration::from_secs(2));
        let defaults = BrokerConfig::from_file_config(FileConfig::default()).expect("ok");
        assert_eq!(
            (defaults.users, defaults.auth_timeout),
            (None, Duration::from_secs(5))
        );
        let bad = parse_file("auth_timeout_ms = 5").expect("toml");
        let err = BrokerConfig::from_file_config(bad)
            .expect_err("too short")
            .to_string();
        assert!(err.starts_with("auth_timeout_ms"), "{err}");
        let command = flags(&["hash-password", "--scram"]);
        assert_eq!(
            command.command,
            Some(BrokerCommand::HashPassword {
                scram: true,
                toml: false
            })
        );
    }

    #[test]
    fn flush_over_resp_is_off_unless_enabled() {
        let default = BrokerConfig::from_file_config(FileConfig::default()).expect("defaults");
        assert!(!default.resp_allow_flush);
        let file = parse_file("resp_allow_flush = true").expect("toml");
        let on = BrokerConfig::from_file_config(flags(&[]).overlay(file.clone())).expect("file");
        assert!(on.resp_allow_flush);
        assert!(
            on.settings_in_effect()
                .contains(&("resp_allow_flush", "true".to_owned()))
        );
        let flag = flags(&["--resp-allow-flush", "false"]).overlay(file);
        assert!(
            !BrokerConfig::from_file_config(flag)
                .expect("flag")
                .resp_allow_flush
        );
        assert!(parse_file("resp_allow_flush = \"yes\"").is_err());
    }

    #[test]
    fn preallocate_is_off_unless_asked_for() {
        let default = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
        assert!(!default.log.preallocate);
        let file = parse_file("preallocate = true").expect("toml");
        let on = BrokerConfig::from_file_config(file).expect("config");
        assert!(on.log.preallocate);
        assert!(
            on.settings_in_effect()
                .contains(&("preallocate", "true".to_owned()))
        );
        let flag = flags(&["--preallocate", "true"]).overlay(FileConfig::default());
        assert!(
            BrokerConfig::from_file_config(flag)
                .expect("flag")
                .log
                .preallocate
        );
    }

    #[test]
    fn retention_zero_means_forever() {
        let c = FileConfig {
            retention_ms: Some(0),
            ..FileConfig::default()
        };
        assert_eq!(
            BrokerConfig::from_file_config(c)
                .expect("ok")
                .log
                .retention_ms,
            None
        );
    }
}
