//! The crash loop (issue 6): idempotent producers and acking consumers run
//! against a real `pigeon-broker` (`--fsync always`) while the broker is
//! killed with SIGKILL and restarted many times at random moments; a checker
//! then compares what the clients recorded with what the log holds.
//!
//! ## The workload
//!
//! - One topic ([`TOPIC`]) with [`Config::partitions`] partitions and
//!   [`Config::groups`] consumer groups with a small `max_deliveries` and a
//!   short ack timeout and backoff, so that redeliveries, lease expiries and
//!   dead letters all happen within the run.
//! - [`Config::producers`] idempotent producers (distinct names), each
//!   sending records at a steady rate. Record `(producer, seq)` is a pure
//!   function of the seed ([`message`]): its partition, whether it is
//!   *poison* (always nacked, so it must reach the DLQ through
//!   `max_deliveries`), random padding, and a checksum over key and value
//!   (also in a header), so a damaged delivery is detected. Each send's
//!   outcome is recorded: acknowledged (with its offset), failed with an
//!   unknown outcome (it may or may not be in the log), refused by the
//!   broker, or never enqueued.
//! - [`Config::consumers_per_group`] consumers per group. A pure function
//!   of (seed, group, message, attempt) decides ack (80 %), nack (15 %) or
//!   reject (5 %), and rarely to stall past the ack timeout first (the lease
//!   expires and goes to the other consumer). Acks are sent one by one or
//!   in `ack_all` runs. Every delivery and every settle (with the time it
//!   was sent and whether the broker said OK, refused it, or the answer was
//!   lost) is recorded.
//! - All clients reach the broker through a [`FaultyProxy`] (dropping
//!   nothing), whose upstream follows the restarted broker's new port.
//! - The killer sleeps a random time, then SIGKILLs the broker and restarts
//!   it on the same data dir. Some cycles instead keep it down longer than
//!   the producers' delivery timeout (sends fail with an unknown outcome),
//!   kill it again right after it serves, or kill it again while it starts
//!   (in recovery).
//!
//! After the last cycle the producers stop, the consumers drain until every
//! group has nothing left (lag, in flight and delayed all 0), then the
//! broker is stopped cleanly (SIGTERM, exit 0), started again and everything
//! is read back: the topic and each group's `<topic>.<group>.dlq`.
//!
//! ## What the checker verifies (`check`)
//!
//! - Every acknowledged produce is in the log exactly once, at the offset
//!   it was acknowledged with; records refused or never enqueued are not in
//!   the log; records whose outcome was unknown are in it at most once.
//! - Every record in the log is intact and is one some producer sent, in
//!   the partition it chose, byte for byte; no record is in the log twice;
//!   each producer's records are in send order within a partition.
//! - For each group: every record was delivered at least once; every
//!   delivery was intact and equal to the log's record; attempts are within
//!   `1..=max_deliveries`; the last delivery of every record was acked (the
//!   broker said OK, or the answer was lost) or the record is in the
//!   group's DLQ; every poison record is in the DLQ with reason
//!   `max-deliveries`.
//! - The DLQ holds each source record at most once, in the partition of the
//!   same number, with key, value and headers equal to the source record,
//!   headers pointing back at it, attempts `max_deliveries` (reason
//!   `max-deliveries`) or at most that (reason `rejected`, and then a
//!   consumer did reject it, with that reason text).
//! - Redeliveries that at-least-once allows only across a crash are each
//!   explained by a kill between the two events, taken in the order the
//!   broker leased them (a consumer may hold a delivery in its buffer for a
//!   while): a delivery after an ack the broker answered OK (the documented
//!   window: acks of the last group commit before a crash may be
//!   forgotten), after a reject answered OK, after the record's DLQ copy
//!   was written, an attempt number that did not grow (the lease was not
//!   journaled yet), and a record both acked and dead-lettered. They are
//!   counted and reported.
//! - After the clean restart: each group describes lag 0, nothing in flight
//!   or delayed, as many dead letters as its DLQ holds (less those parked
//!   and then delivered again and acked), and a new consumer gets nothing.
//!
//! Two broker bugs it found (`docs/reliability.md`, "Bugs found by the
//! crash loop", both fixed) are counted here and asserted to be 0 by the
//! tests: a parked message delivered again after a crash, and a late settle
//! of an expired lease applied to the same consumer's newer lease.
//!
//! The seed ([`Config::seed`], `PIGEON_CRASH_SEED`) fixes the workload, the
//! consumers' decisions and the killer's timing; the interleaving with the
//! broker is not reproducible, so a replay repeats the same conditions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use pigeon_client::batch::{Header, Record};
use pigeon_client::client::{
    Admin, Backoff, CircuitConfig, Client, ClientConfig, ClientError, Consumer, ConsumerConfig,
    Delivery, GroupDelivery, NewTopic, Producer, ProducerConfig, ProducerRecord, Reader,
    ReaderConfig, RecordMetadata, StartAt,
};
use pigeon_client::protocol::{DescribeGroupResponse, ErrorCode, GroupSettings};

use crate::Broker;
use crate::proxy::FaultyProxy;

/// The topic the crash loop produces to.
pub const TOPIC: &str = "crash";

/// The header carrying a record's checksum (also inside its value).
const CHECK_HEADER: &str = "crash-loop-check";

/// Poison records, per thousand: always nacked, so dead-lettered.
const POISON_PERMILLE: u64 = 15;

/// Deliveries a consumer stalls on past the ack timeout, per 10,000.
const STALL_PER_10K: u64 = 5;

/// Most sends a producer has in flight before it waits for the oldest.
const SEND_WINDOW: usize = 2_000;

/// How the crash loop runs; [`Config::short`] (CI) and [`Config::long`]
/// (opt-in), then [`Config::with_env`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Fixes the workload, the consumers' decisions and the killer's timing.
    pub seed: u64,
    /// Kill cycles.
    pub cycles: u32,
    /// Partitions of [`TOPIC`].
    pub partitions: u32,
    /// Idempotent producers (distinct names).
    pub producers: u32,
    /// Consumer groups.
    pub groups: u32,
    /// Consumers in each group.
    pub consumers_per_group: u32,
    /// The groups' `max_deliveries`.
    pub max_deliveries: u32,
    /// The groups' ack timeout.
    pub ack_timeout_ms: u32,
    /// Records each producer sends per second.
    pub records_per_sec: u32,
    /// How long the broker runs between kills: uniform in this range.
    pub uptime: (Duration, Duration),
    /// The producers' delivery timeout: sends still unanswered this long
    /// after they were enqueued fail with an unknown outcome.
    pub delivery_timeout: Duration,
    /// How long a long outage keeps the broker down (longer than the
    /// delivery timeout).
    pub outage: Duration,
    /// Segment size of the broker's logs (small: many rolls and checkpoints).
    pub segment_bytes: u64,
    /// Longest time the consumers may take to drain after the last cycle.
    pub drain_within: Duration,
}

impl Config {
    /// The CI size: about a minute in a debug build, 10 kill cycles.
    pub fn short() -> Config {
        Config {
            seed: 1,
            cycles: 10,
            partitions: 3,
            producers: 2,
            groups: 2,
            consumers_per_group: 2,
            max_deliveries: 4,
            ack_timeout_ms: 1_000,
            records_per_sec: 200,
            uptime: (Duration::from_millis(200), Duration::from_millis(3_000)),
            delivery_timeout: Duration::from_secs(3),
            outage: Duration::from_millis(4_000),
            segment_bytes: 128 * 1024,
            drain_within: Duration::from_secs(120),
        }
    }

    /// The opt-in size: 100 kill cycles at a higher rate.
    pub fn long() -> Config {
        Config {
            cycles: 100,
            records_per_sec: 400,
            drain_within: Duration::from_secs(300),
            ..Config::short()
        }
    }

    /// Applies `PIGEON_CRASH_SEED` (else a random seed) and
    /// `PIGEON_CRASH_CYCLES`.
    pub fn with_env(mut self) -> Config {
        self.seed = match std::env::var("PIGEON_CRASH_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("PIGEON_CRASH_SEED={s} is not a number")),
            Err(_) => random_seed(),
        };
        if let Ok(s) = std::env::var("PIGEON_CRASH_CYCLES") {
            self.cycles = s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("PIGEON_CRASH_CYCLES={s} is not a number"));
        }
        self
    }

    /// The environment that replays this run.
    pub fn replay(&self) -> String {
        format!(
            "PIGEON_CRASH_SEED={} PIGEON_CRASH_CYCLES={}",
            self.seed, self.cycles
        )
    }

    fn group_settings(&self) -> GroupSettings {
        GroupSettings {
            ack_timeout_ms: self.ack_timeout_ms,
            max_deliveries: self.max_deliveries,
            backoff_initial_ms: 20,
            backoff_multiplier: 2.0,
            backoff_max_ms: 200,
            backoff_jitter_permille: 200,
            max_in_flight: 64,
        }
    }
}

fn random_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    mix(&[nanos, u64::from(std::process::id())]) % 1_000_000_000_000
}

/// The name of group `g`.
pub fn group_name(g: u32) -> String {
    format!("g{g}")
}

// ---------------------------------------------------------------------------
// Randomness and checksums (deterministic, no dependencies).

/// SplitMix64 finaliser.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A hash of `values`: the stateless randomness of decisions.
fn mix(values: &[u64]) -> u64 {
    values
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &v| splitmix(h ^ v))
}

/// A seeded random sequence (the killer's).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }
}

/// FNV-1a 64 over several byte strings, each followed by its length.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain((part.len() as u64).to_le_bytes().iter()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Milliseconds since the Unix epoch (the broker stamps DLQ copies with the
/// same clock).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------
// Records.

/// Producer `producer`'s record number `seq`: a pure function of the seed.
#[derive(Debug, Clone)]
pub struct Message {
    /// The key, `p<producer>-s<seq>`.
    pub key: Bytes,
    /// `crash-loop|<producer>|<seq>|<poison>|<padding>|<checksum>`.
    pub value: Bytes,
    /// The checksum, hex (also the [`CHECK_HEADER`] header).
    pub check: String,
    /// The partition it is sent to.
    pub partition: u32,
    /// Always nacked by consumers.
    pub poison: bool,
}

/// The record `(producer, seq)` of a run with `config`.
pub fn message(config: &Config, producer: u32, seq: u64) -> Message {
    let h = mix(&[config.seed, 0x5E4D, u64::from(producer), seq]);
    let partition = (h % u64::from(config.partitions)) as u32;
    let poison = (h >> 16) % 1000 < POISON_PERMILLE;
    let pad_len = ((h >> 32) % 160) as usize;
    let pad: String = (0..pad_len)
        .map(|i| char::from(b'a' + (splitmix(h ^ i as u64) % 26) as u8))
        .collect();
    let key = format!("p{producer}-s{seq}");
    let body = format!("crash-loop|{producer}|{seq}|{}|{pad}", u8::from(poison));
    let check = format!("{:016x}", fnv(&[key.as_bytes(), body.as_bytes()]));
    Message {
        value: Bytes::from(format!("{body}|{check}")),
        key: Bytes::from(key),
        check,
        partition,
        poison,
    }
}

/// What a record says it is, if it is intact: `(producer, seq, poison)`.
fn identify(key: Option<&[u8]>, value: &[u8], headers: &[Header]) -> Option<(u32, u64, bool)> {
    let value = std::str::from_utf8(value).ok()?;
    let (body, check) = value.rsplit_once('|')?;
    let key = key?;
    if format!("{:016x}", fnv(&[key, body.as_bytes()])) != check {
        return None;
    }
    let header = headers.iter().find(|h| h.name == CHECK_HEADER)?;
    if header.value.as_ref() != check.as_bytes() {
        return None;
    }
    let mut fields = body.split('|');
    if fields.next()? != "crash-loop" {
        return None;
    }
    let producer = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let poison = fields.next()? == "1";
    (key == format!("p{producer}-s{seq}").as_bytes()).then_some((producer, seq, poison))
}

/// A hash of key, value and the headers other than `pigeon.*` ones (which
/// the broker adds to DLQ copies).
fn content_hash<'a>(
    key: Option<&[u8]>,
    value: &[u8],
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> u64 {
    let mut parts: Vec<&[u8]> = vec![
        key.map_or(b"-".as_slice(), |_| b"+"),
        key.unwrap_or(b""),
        value,
    ];
    for (name, value) in headers.filter(|(n, _)| !n.starts_with("pigeon.")) {
        parts.push(name.as_bytes());
        parts.push(value);
    }
    fnv(&parts)
}

fn record_hash(key: Option<&Bytes>, value: &[u8], headers: &[Header]) -> u64 {
    content_hash(
        key.map(|k| k.as_ref()),
        value,
        headers.iter().map(|h| (h.name.as_str(), h.value.as_ref())),
    )
}

fn message_hash(m: &Message) -> u64 {
    content_hash(
        Some(&m.key),
        &m.value,
        std::iter::once((CHECK_HEADER, m.check.as_bytes())),
    )
}

// ---------------------------------------------------------------------------
// Clients.

fn client_config() -> ClientConfig {
    ClientConfig {
        client_name: "crash-loop".into(),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        reconnect_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
        circuit: CircuitConfig {
            probe_interval: Duration::from_millis(300),
            ..CircuitConfig::default()
        },
        ..ClientConfig::default()
    }
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The broker acknowledged it at this offset.
    Acked(RecordMetadata),
    /// It failed after attempts whose outcome is unknown: it may be in
    /// the log (once).
    Unknown(String),
    /// The broker refused it (a non-retriable code): not in the log.
    Refused(String),
    /// `enqueue` failed (e.g. an open circuit): never sent.
    NotEnqueued(String),
}

#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    outcome: SendOutcome,
}

fn send_outcome(result: Result<RecordMetadata, ClientError>) -> SendOutcome {
    match result {
        Ok(metadata) => SendOutcome::Acked(metadata),
        Err(err @ ClientError::Broker { code, .. }) if !code.is_retriable() => {
            SendOutcome::Refused(err.to_string())
        }
        Err(err) => SendOutcome::Unknown(err.to_string()),
    }
}

async fn run_producer(
    config: Arc<Config>,
    index: u32,
    addr: String,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let producer = Producer::new(
        Client::lazy(addr, client_config()),
        ProducerConfig {
            linger: Duration::from_millis(2),
            max_batch_bytes: 16 * 1024,
            delivery_timeout: config.delivery_timeout,
            retry_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            request_timeout: Duration::from_secs(2),
            idempotent: true,
            producer_name: Some(format!("crash-loop-{index}")),
            ..ProducerConfig::default()
        },
    );
    let mut sent = Vec::new();
    let mut pending: VecDeque<(u64, Delivery)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / config.records_per_sec.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let m = message(&config, index, seq);
        let record = ProducerRecord::new(m.value)
            .key(m.key)
            .header(CHECK_HEADER, m.check)
            .partition(m.partition);
        match producer.enqueue(TOPIC, record).await {
            Ok(delivery) => pending.push_back((seq, delivery)),
            Err(err) => sent.push(Sent {
                seq,
                outcome: SendOutcome::NotEnqueued(err.to_string()),
            }),
        }
        seq += 1;
        while let Some((_, delivery)) = pending.front_mut() {
            let Some(result) = delivery.now_or_never() else {
                break;
            };
            let (seq, _) = pending.pop_front().expect("front");
            sent.push(Sent {
                seq,
                outcome: send_outcome(result),
            });
        }
        if pending.len() > SEND_WINDOW
            && let Some((seq, delivery)) = pending.pop_front()
        {
            sent.push(Sent {
                seq,
                outcome: send_outcome(delivery.await),
            });
        }
    }
    // Each one completes within the delivery timeout.
    for (seq, delivery) in pending {
        sent.push(Sent {
            seq,
            outcome: send_outcome(delivery.await),
        });
    }
    producer.close().await;
    sent
}

/// How a consumer settles a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Ack.
    Ack,
    /// Nack (the group's backoff).
    Nack,
    /// Reject (to the DLQ).
    Reject,
}

/// What the broker said to one settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Applied.
    Ok,
    /// Refused with `LeaseLost`: not applied.
    LeaseLost,
    /// No answer, or another error: it may or may not have been applied.
    Unknown,
}

/// One delivery a consumer got.
#[derive(Debug, Clone)]
struct Seen {
    /// Unique per run (links settles to their delivery).
    id: u64,
    consumer: u32,
    /// The consumer id its membership had (the broker's; it changes when
    /// the consumer joins again).
    member: u64,
    partition: u32,
    offset: u64,
    attempt: u32,
    /// When the broker leased it (its lease deadline less the ack timeout;
    /// broker clock, ms since the epoch): a consumer may hold a delivery in
    /// its buffer for a while before the application sees it.
    leased_ms: i64,
    content: u64,
    /// `(producer, seq, poison)` if the record passed its checksum.
    identity: Option<(u32, u64, bool)>,
}

/// One settle a consumer sent.
#[derive(Debug, Clone)]
struct Settled {
    delivery: u64,
    partition: u32,
    offset: u64,
    action: Action,
    /// Just before the request was sent.
    sent_ms: i64,
    /// When the answer (or the failure) came.
    done_ms: i64,
    outcome: SettleOutcome,
}

/// What one consumer recorded.
#[derive(Debug, Default)]
struct ConsumerLog {
    seen: Vec<Seen>,
    settled: Vec<Settled>,
    errors: u64,
    /// The first few errors, for the figures.
    error_samples: Vec<String>,
}

impl ConsumerLog {
    fn error(&mut self, err: &ClientError) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(err.to_string());
        }
    }
}

fn settle_outcome(result: &Result<(), ClientError>) -> SettleOutcome {
    match result {
        Ok(()) => SettleOutcome::Ok,
        Err(err) if err.code() == Some(ErrorCode::LeaseLost) => SettleOutcome::LeaseLost,
        Err(_) => SettleOutcome::Unknown,
    }
}

/// What consumers of `group` do with attempt `attempt` of a record.
pub fn decide(
    config: &Config,
    group: u32,
    identity: Option<(u32, u64, bool)>,
    attempt: u32,
) -> Action {
    let Some((producer, seq, poison)) = identity else {
        // Damaged: parked, so it shows (the checker reports it anyway).
        return Action::Reject;
    };
    if poison {
        return Action::Nack;
    }
    match mix(&[
        config.seed,
        0xAC7,
        u64::from(group),
        u64::from(producer),
        seq,
        u64::from(attempt),
    ]) % 100
    {
        0..80 => Action::Ack,
        80..95 => Action::Nack,
        _ => Action::Reject,
    }
}

/// The reason a consumer gives when it rejects `(producer, seq)`.
fn reject_reason(identity: Option<(u32, u64, bool)>) -> String {
    match identity {
        Some((p, s, _)) => format!("crash-loop rejects p{p}-s{s}"),
        None => "crash-loop: damaged record".into(),
    }
}

static DELIVERY_IDS: AtomicU64 = AtomicU64::new(1);

async fn flush_acks(acks: &mut Vec<(u64, GroupDelivery)>, log: &mut ConsumerLog) {
    if acks.is_empty() {
        return;
    }
    let batch: Vec<GroupDelivery> = acks.iter().map(|(_, d)| d.clone()).collect();
    let sent_ms = now_ms();
    let results = GroupDelivery::ack_all(&batch).await;
    let done_ms = now_ms();
    for (i, (id, d)) in acks.drain(..).enumerate() {
        let outcome = match &results {
            Ok(results) => results
                .get(i)
                .map_or(SettleOutcome::Unknown, settle_outcome),
            Err(_) => SettleOutcome::Unknown,
        };
        log.settled.push(Settled {
            delivery: id,
            partition: d.partition,
            offset: d.offset,
            action: Action::Ack,
            sent_ms,
            done_ms,
            outcome,
        });
    }
}

async fn run_consumer(
    config: Arc<Config>,
    group: u32,
    index: u32,
    addr: String,
    stop: Arc<AtomicBool>,
) -> ConsumerLog {
    let client = Client::lazy(addr, client_config());
    let consumer_config = ConsumerConfig {
        consumer_name: format!("crash-loop-g{group}-c{index}"),
        max_messages: 8,
        max_bytes: 0,
        max_wait: Duration::from_millis(200),
        retry_backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
        // The loop stalls past the ack timeout on purpose: leases must run
        // out then, as a hung consumer's do.
        keep_leases: false,
    };
    let mut log = ConsumerLog::default();
    let mut consumer: Option<Consumer> = None;
    let mut acks: Vec<(u64, GroupDelivery)> = Vec::new();
    let stall = Duration::from_millis(u64::from(config.ack_timeout_ms) + 300);
    while !stop.load(Ordering::SeqCst) {
        let current = match &mut consumer {
            Some(c) => c,
            None => {
                match Consumer::join(&client, TOPIC, &group_name(group), consumer_config.clone())
                    .await
                {
                    Ok(c) => consumer.insert(c),
                    Err(err) => {
                        log.error(&err);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        let delivery = match current.next_within(Duration::from_millis(200)).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                flush_acks(&mut acks, &mut log).await;
                continue;
            }
            Err(err) => {
                log.error(&err);
                flush_acks(&mut acks, &mut log).await;
                consumer = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = DELIVERY_IDS.fetch_add(1, Ordering::Relaxed);
        let identity = identify(delivery.key.as_deref(), &delivery.value, &delivery.headers);
        log.seen.push(Seen {
            id,
            consumer: group * 1000 + index,
            member: current.consumer_id(),
            partition: delivery.partition,
            offset: delivery.offset,
            attempt: delivery.attempt,
            leased_ms: delivery.lease_deadline_ms - i64::from(config.ack_timeout_ms),
            content: record_hash(delivery.key.as_ref(), &delivery.value, &delivery.headers),
            identity,
        });
        let action = decide(&config, group, identity, delivery.attempt);
        let (producer, seq) = identity.map_or((u32::MAX, 0), |(p, s, _)| (p, s));
        let roll = mix(&[
            config.seed,
            0x57A1,
            u64::from(group),
            u64::from(producer),
            seq,
            u64::from(delivery.attempt),
        ]);
        if roll % 10_000 < STALL_PER_10K {
            flush_acks(&mut acks, &mut log).await;
            tokio::time::sleep(stall).await;
        }
        if action == Action::Ack && roll.is_multiple_of(2) {
            acks.push((id, delivery));
            if acks.len() >= 4 {
                flush_acks(&mut acks, &mut log).await;
            }
            continue;
        }
        let sent_ms = now_ms();
        let result = match action {
            Action::Ack => delivery.ack().await,
            Action::Nack => delivery.nack(None).await,
            Action::Reject => delivery.reject(reject_reason(identity)).await,
        };
        log.settled.push(Settled {
            delivery: id,
            partition: delivery.partition,
            offset: delivery.offset,
            action,
            sent_ms,
            done_ms: now_ms(),
            outcome: settle_outcome(&result),
        });
    }
    flush_acks(&mut acks, &mut log).await;
    if let Some(c) = consumer {
        c.close().await;
    }
    log
}

// ---------------------------------------------------------------------------
// The run.

/// How one kill cycle went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillKind {
    /// SIGKILL, restart at once.
    Plain,
    /// SIGKILL right after the broker started serving.
    AfterStart,
    /// SIGKILL, down for [`Config::outage`], restart.
    Outage,
    /// SIGKILL, a restart killed again while starting, restart.
    DuringStart,
}

/// One kill cycle: every SIGKILL of it happened in `[start_ms, end_ms]`.
#[derive(Debug, Clone, Copy)]
struct Kill {
    kind: KillKind,
    start_ms: i64,
    end_ms: i64,
}

/// Everything read back from the broker after the run.
struct LogContents {
    /// Per partition of [`TOPIC`], the records by offset.
    source: Vec<Vec<Record>>,
    /// Per group, per partition of its DLQ.
    dlq: Vec<Vec<Vec<Record>>>,
    /// Per group, as described after the clean restart.
    described: Vec<DescribeGroupResponse>,
    /// Per group, what a new consumer got after the clean restart.
    leftovers: Vec<usize>,
}

/// The figures of a run.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// The seed.
    pub seed: u64,
    /// Kill cycles survived (each one at least one SIGKILL).
    pub cycles: u32,
    /// Of them: kept down past the delivery timeout.
    pub outages: u32,
    /// Of them: killed again while starting.
    pub during_start: u32,
    /// Of them: killed right after serving.
    pub after_start: u32,
    /// Records the producers tried to send.
    pub sent: u64,
    /// Of them acknowledged.
    pub acked: u64,
    /// Of them failed with an unknown outcome (found in the log / not).
    pub unknown_in_log: u64,
    /// Unknown outcome, not in the log.
    pub unknown_absent: u64,
    /// Refused by the broker (not in the log).
    pub refused: u64,
    /// Never enqueued (e.g. the circuit was open).
    pub not_enqueued: u64,
    /// Refused or never enqueued because the producer was fenced (must
    /// be 0: each producer name has one instance, so fencing is a client
    /// bug; one made a producer fence itself after an outage and refuse
    /// everything afterwards).
    pub fenced: u64,
    /// Records in the log (all checked).
    pub log_records: u64,
    /// Acknowledged produces missing from the log (must be 0).
    pub lost: u64,
    /// Records in the log more than once (must be 0).
    pub log_duplicates: u64,
    /// Deliveries, all groups.
    pub deliveries: u64,
    /// Deliveries of a record the group had been delivered before.
    pub redeliveries: u64,
    /// Settles answered OK: acks, nacks, rejects.
    pub acks_ok: u64,
    /// Nacks answered OK.
    pub nacks_ok: u64,
    /// Rejects answered OK.
    pub rejects_ok: u64,
    /// Settles answered `LeaseLost`.
    pub lease_lost: u64,
    /// Settles whose answer was lost.
    pub settles_unknown: u64,
    /// DLQ copies, all groups (each of a different record).
    pub dead_lettered: u64,
    /// Of them because of `max_deliveries`.
    pub dead_lettered_max_deliveries: u64,
    /// Redeliveries after an ack answered OK (each across a kill).
    pub ack_window_redeliveries: u64,
    /// Redeliveries after a reject answered OK (each across a kill).
    pub reject_window_redeliveries: u64,
    /// Redeliveries after the DLQ copy was written (each across a kill).
    pub dlq_window_redeliveries: u64,
    /// Deliveries whose attempt number did not grow (each across a kill).
    pub attempt_repeats: u64,
    /// Records both acked OK and dead-lettered (each across a kill).
    pub acked_and_dead_lettered: u64,
    /// Records parked in the DLQ, then leased again after a crash and
    /// acked: settled as acked (the DLQ copy was written before the
    /// dead-lettering was journaled).
    pub parked_then_acked: u64,
    /// Settles answered OK that the broker applied to a newer lease of the
    /// same consumer (a fixed bug: the old lease had expired; must be 0).
    pub stale_settles_redirected: u64,
    /// Longest time from an ack answered OK to the kill that made it be
    /// redelivered, ms.
    pub max_ack_to_kill_ms: i64,
    /// Errors `Consumer::next_within` returned (it retries retriable ones
    /// itself).
    pub consumer_errors: u64,
    /// A few of them.
    pub consumer_error_samples: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "crash loop figures (seed {}):", self.seed)?;
        writeln!(
            f,
            "  kill cycles survived: {} ({} long outages, {} killed again while starting, {} killed right after serving)",
            self.cycles, self.outages, self.during_start, self.after_start
        )?;
        writeln!(
            f,
            "  produced: {} sent, {} acknowledged, {} unknown outcome ({} in the log, {} not), {} refused, {} never enqueued (circuit open); refused as fenced (must be 0): {}",
            self.sent,
            self.acked,
            self.unknown_in_log + self.unknown_absent,
            self.unknown_in_log,
            self.unknown_absent,
            self.refused,
            self.not_enqueued,
            self.fenced
        )?;
        writeln!(
            f,
            "  log: {} records checked; acknowledged then lost: {}; duplicates in the log: {}",
            self.log_records, self.lost, self.log_duplicates
        )?;
        writeln!(
            f,
            "  delivered: {} deliveries ({} redeliveries), {} acks / {} nacks / {} rejects answered OK, {} LeaseLost, {} unanswered",
            self.deliveries,
            self.redeliveries,
            self.acks_ok,
            self.nacks_ok,
            self.rejects_ok,
            self.lease_lost,
            self.settles_unknown
        )?;
        writeln!(
            f,
            "  dead-lettered: {} ({} by max_deliveries), none twice",
            self.dead_lettered, self.dead_lettered_max_deliveries
        )?;
        writeln!(
            f,
            "  across a kill: {} redeliveries after an OK ack (longest ack-to-kill {} ms), {} after an OK reject, {} after the DLQ copy ({} then acked), {} repeated attempt numbers, {} acked OK and dead-lettered",
            self.ack_window_redeliveries,
            self.max_ack_to_kill_ms,
            self.reject_window_redeliveries,
            self.dlq_window_redeliveries,
            self.parked_then_acked,
            self.attempt_repeats,
            self.acked_and_dead_lettered
        )?;
        writeln!(
            f,
            "  late settles of an expired lease applied to the same consumer's newer lease (must be 0): {}",
            self.stale_settles_redirected
        )?;
        writeln!(
            f,
            "  consumer errors surfaced: {} {:?}; time {:.1} s",
            self.consumer_errors,
            self.consumer_error_samples,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs the crash loop in `dir` (a fresh, empty directory) and checks the
/// result; returns the figures, or panics with every violation found and
/// the seed.
pub fn run(config: &Config, dir: &Path) -> Figures {
    eprintln!(
        "crash loop: seed {} ({} cycles); replay with {}",
        config.seed,
        config.cycles,
        config.replay()
    );
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(config, dir)));
    match outcome {
        Ok((figures, violations)) if violations.is_empty() => {
            eprintln!("{figures}");
            figures
        }
        Ok((figures, violations)) => {
            eprintln!("{figures}");
            let shown: Vec<&String> = violations.iter().take(40).collect();
            panic!(
                "crash loop (seed {}, replay with {}) found {} violation(s):\n  {}{}",
                config.seed,
                config.replay(),
                violations.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  "),
                if violations.len() > shown.len() {
                    "\n  …"
                } else {
                    ""
                }
            );
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "crash loop (seed {}, replay with {}) failed: {message}",
                config.seed,
                config.replay()
            );
        }
    }
}

/// The figures and every violation found (none: the run passed).
fn run_inner(config: &Config, dir: &Path) -> (Figures, Vec<String>) {
    let started = Instant::now();
    let config = Arc::new(config.clone());
    let data = dir.join("data");
    let segment = config.segment_bytes.to_string();
    // Group snapshots every 4 KiB of journal (about 128 events), so that
    // the kills land before, during and after snapshots and journal trims.
    let mut broker = Broker::start(
        &data,
        &[
            "--fsync",
            "always",
            "--segment-bytes",
            &segment,
            "--group-snapshot-bytes",
            "4096",
        ],
    );
    let rt = crate::runtime();
    let proxy = rt.block_on(FaultyProxy::start(broker.addr, 0, 1));
    let addr = proxy.addr.to_string();
    rt.block_on(async {
        let admin = Admin::new(
            Client::connect_with(addr.clone(), client_config())
                .await
                .expect("connect"),
        );
        admin
            .create_topic(NewTopic::new(TOPIC, config.partitions))
            .await
            .expect("create the topic");
        for g in 0..config.groups {
            admin
                .create_group(TOPIC, &group_name(g), config.group_settings())
                .await
                .expect("create a group");
        }
    });

    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..config.producers)
        .map(|p| {
            rt.spawn(run_producer(
                config.clone(),
                p,
                addr.clone(),
                stop_producers.clone(),
            ))
        })
        .collect();
    let consumers: Vec<Vec<_>> = (0..config.groups)
        .map(|g| {
            (0..config.consumers_per_group)
                .map(|c| {
                    rt.spawn(run_consumer(
                        config.clone(),
                        g,
                        c,
                        addr.clone(),
                        stop_consumers.clone(),
                    ))
                })
                .collect()
        })
        .collect();

    // The killer.
    let mut rng = Rng(mix(&[config.seed, 0x4B11]));
    let forced_outage = rng.below(u64::from(config.cycles.max(1)));
    let mut kills = Vec::new();
    for cycle in 0..config.cycles {
        let roll = rng.below(100);
        let kind = if u64::from(cycle) == forced_outage || roll < 8 {
            KillKind::Outage
        } else if roll < 18 {
            KillKind::DuringStart
        } else if roll < 28 {
            KillKind::AfterStart
        } else {
            KillKind::Plain
        };
        let up = match kind {
            KillKind::AfterStart => Duration::from_millis(rng.below(50)),
            _ => rng.between(config.uptime),
        };
        std::thread::sleep(up);
        let start_ms = now_ms();
        broker.kill();
        match kind {
            KillKind::Outage => std::thread::sleep(config.outage),
            KillKind::DuringStart => {
                broker.crash_while_starting(Duration::from_millis(rng.below(60)));
            }
            KillKind::Plain | KillKind::AfterStart => {}
        }
        let end_ms = now_ms();
        broker.restart();
        proxy.set_upstream(broker.addr);
        kills.push(Kill {
            kind,
            start_ms,
            end_ms,
        });
    }
    // Some work with no kill, then stop producing.
    std::thread::sleep(rng.between(config.uptime));
    stop_producers.store(true, Ordering::SeqCst);
    let produced: Vec<Vec<Sent>> = producers
        .into_iter()
        .map(|h| {
            rt.block_on(async {
                tokio::time::timeout(config.delivery_timeout + Duration::from_secs(60), h)
                    .await
                    .expect("a producer finished in time")
                    .expect("a producer task")
            })
        })
        .collect();

    // Drain: every group has settled everything.
    let drain_deadline = Instant::now() + config.drain_within;
    loop {
        let last = match rt.block_on(describe_all(&config, &addr)) {
            Ok(groups) if groups.iter().all(drained) => break,
            Ok(groups) => format!("{groups:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < drain_deadline,
            "the groups did not drain within {:?}; last seen: {last}",
            config.drain_within
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_consumers.store(true, Ordering::SeqCst);
    let consumed: Vec<Vec<ConsumerLog>> = consumers
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|h| {
                    rt.block_on(async {
                        tokio::time::timeout(Duration::from_secs(60), h)
                            .await
                            .expect("a consumer finished in time")
                            .expect("a consumer task")
                    })
                })
                .collect()
        })
        .collect();

    // A clean stop, a clean start, and everything read back.
    assert_eq!(
        broker.terminate(),
        Some(0),
        "clean stop:\n{}",
        broker.log_text()
    );
    broker.restart();
    let contents = rt.block_on(read_back(&config, &broker.addr.to_string()));
    drop(broker);
    let mut figures = Figures {
        elapsed: started.elapsed(),
        ..Figures::default()
    };
    let violations = check(
        &config,
        &produced,
        &consumed,
        &kills,
        &contents,
        &mut figures,
    );
    (figures, violations)
}

fn drained(group: &DescribeGroupResponse) -> bool {
    group
        .partitions
        .iter()
        .all(|p| p.lag == 0 && p.in_flight == 0 && p.delayed == 0)
}

async fn describe_all(
    config: &Config,
    addr: &str,
) -> Result<Vec<DescribeGroupResponse>, ClientError> {
    let admin = Admin::new(Client::connect_with(addr.to_string(), client_config()).await?);
    let mut out = Vec::new();
    for g in 0..config.groups {
        out.push(admin.describe_group(TOPIC, &group_name(g)).await?);
    }
    Ok(out)
}

async fn read_partition(client: &Client, topic: &str, partition: u32) -> Vec<Record> {
    let config = ReaderConfig::new(StartAt::Earliest).follow(false);
    let mut reader = Reader::open(client, topic, partition, config)
        .await
        .unwrap_or_else(|e| panic!("open {topic}/{partition}: {e}"));
    let mut out = Vec::new();
    while let Some(record) = reader.next().await {
        out.push(record.unwrap_or_else(|e| panic!("read {topic}/{partition}: {e}")));
    }
    out
}

async fn read_back(config: &Config, addr: &str) -> LogContents {
    let client = Client::connect_with(addr.to_string(), client_config())
        .await
        .expect("connect after the clean restart");
    let mut source = Vec::new();
    for p in 0..config.partitions {
        source.push(read_partition(&client, TOPIC, p).await);
    }
    let mut dlq = Vec::new();
    let mut described = Vec::new();
    let mut leftovers = Vec::new();
    for g in 0..config.groups {
        let name = format!("{TOPIC}.{}.dlq", group_name(g));
        let mut partitions = Vec::new();
        for p in 0..config.partitions {
            partitions.push(read_partition(&client, &name, p).await);
        }
        dlq.push(partitions);
        described.push(
            client
                .admin()
                .describe_group(TOPIC, &group_name(g))
                .await
                .expect("describe after the clean restart"),
        );
        let mut consumer =
            Consumer::join(&client, TOPIC, &group_name(g), ConsumerConfig::default())
                .await
                .expect("join after the clean restart");
        let mut got = 0;
        while let Some(d) = consumer
            .next_within(Duration::from_millis(500))
            .await
            .expect("receive after the clean restart")
        {
            got += 1;
            let _ = d.ack().await;
        }
        consumer.close().await;
        leftovers.push(got);
    }
    LogContents {
        source,
        dlq,
        described,
        leftovers,
    }
}

// ---------------------------------------------------------------------------
// The checker.

/// A DLQ copy, as its headers describe it.
#[derive(Debug, Clone)]
struct Parked {
    attempts: u32,
    reason: String,
    reason_text: String,
    at_ms: i64,
}

fn header_str<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| std::str::from_utf8(&h.value).ok())
}

/// The kill that explains an event observed at `after_ms` followed by one
/// observed at `before_ms`: a SIGKILL that may have come after the first
/// and before the second.
fn kill_between(kills: &[Kill], after_ms: i64, before_ms: i64) -> Option<&Kill> {
    kills
        .iter()
        .find(|k| k.end_ms + CLOCK_SLACK_MS >= after_ms && k.start_ms - CLOCK_SLACK_MS <= before_ms)
}

/// Tolerance when comparing times of the broker (leases: its start time
/// plus a monotonic clock; DLQ copies: the system clock) with each other and
/// with the harness's (kill times: the system clock), in ms. A restart
/// takes far longer, so an event that needs a kill between is never this
/// close to the one before it.
const CLOCK_SLACK_MS: i64 = 20;

/// Compares what the clients recorded with what the log holds; fills in
/// `figures` and returns every violation found.
fn check(
    config: &Config,
    produced: &[Vec<Sent>],
    consumed: &[Vec<ConsumerLog>],
    kills: &[Kill],
    contents: &LogContents,
    figures: &mut Figures,
) -> Vec<String> {
    let mut v = Vec::new();
    figures.seed = config.seed;
    figures.cycles = kills.len() as u32;
    for k in kills {
        match k.kind {
            KillKind::Outage => figures.outages += 1,
            KillKind::DuringStart => figures.during_start += 1,
            KillKind::AfterStart => figures.after_start += 1,
            KillKind::Plain => {}
        }
    }

    // --- The log against the producers.
    // Where each (producer, seq) is in the log.
    let mut found: HashMap<(u32, u64), Vec<(u32, u64)>> = HashMap::new();
    // Content hash of each log record, by (partition, offset).
    let mut stored: Vec<Vec<u64>> = Vec::new();
    let mut identity_at: HashMap<(u32, u64), (u32, u64, bool)> = HashMap::new();
    for (p, records) in contents.source.iter().enumerate() {
        let p = p as u32;
        let mut hashes = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            figures.log_records += 1;
            if r.offset != i as u64 {
                v.push(format!(
                    "{TOPIC}/{p}: record #{i} has offset {} (offsets not dense from 0)",
                    r.offset
                ));
            }
            let content = record_hash(r.key.as_ref(), &r.value, &r.headers);
            hashes.push(content);
            let Some(identity) = identify(r.key.as_deref(), &r.value, &r.headers) else {
                v.push(format!(
                    "{TOPIC}/{p}@{}: a record nobody sent or a damaged one ({:?})",
                    r.offset,
                    String::from_utf8_lossy(&r.value)
                ));
                continue;
            };
            let (producer, seq, _) = identity;
            let m = message(config, producer, seq);
            if message_hash(&m) != content || m.partition != p {
                v.push(format!(
                    "{TOPIC}/{p}@{}: p{producer}-s{seq} differs from what was sent (or sent to partition {})",
                    r.offset, m.partition
                ));
            }
            identity_at.insert((p, r.offset), identity);
            found
                .entry((producer, seq))
                .or_default()
                .push((p, r.offset));
        }
        stored.push(hashes);
    }
    let mut sends: HashMap<(u32, u64), &SendOutcome> = HashMap::new();
    for (producer, sent) in produced.iter().enumerate() {
        for s in sent {
            sends.insert((producer as u32, s.seq), &s.outcome);
        }
    }
    for (&(producer, seq), places) in &found {
        if places.len() > 1 {
            figures.log_duplicates += (places.len() - 1) as u64;
            v.push(format!(
                "p{producer}-s{seq} is in the log {} times: {places:?}",
                places.len()
            ));
        }
        if !sends.contains_key(&(producer, seq)) {
            v.push(format!(
                "p{producer}-s{seq} is in the log at {places:?} but was never sent"
            ));
        }
    }
    for (&(producer, seq), outcome) in &sends {
        figures.sent += 1;
        let places = found.get(&(producer, seq));
        match outcome {
            SendOutcome::Acked(m) => {
                figures.acked += 1;
                if places.is_none_or(|places| !places.contains(&(m.partition, m.offset))) {
                    figures.lost += 1;
                    v.push(format!(
                        "p{producer}-s{seq} was acknowledged at {}@{} but the log has it at {:?}",
                        m.partition,
                        m.offset,
                        places.cloned().unwrap_or_default()
                    ));
                }
            }
            SendOutcome::Unknown(_) => {
                if places.is_some() {
                    figures.unknown_in_log += 1;
                } else {
                    figures.unknown_absent += 1;
                }
            }
            SendOutcome::Refused(why) | SendOutcome::NotEnqueued(why) => {
                if why.contains("fenced") {
                    figures.fenced += 1;
                }
                if matches!(outcome, SendOutcome::Refused(_)) {
                    figures.refused += 1;
                } else {
                    figures.not_enqueued += 1;
                }
                if let Some(places) = places {
                    v.push(format!(
                        "p{producer}-s{seq} failed ({why}) yet is in the log at {places:?}"
                    ));
                }
            }
        }
    }
    // Each producer's records in send order within a partition.
    for (p, records) in contents.source.iter().enumerate() {
        let mut last: HashMap<u32, (u64, u64)> = HashMap::new();
        for r in records {
            if let Some(&(producer, seq, _)) = identity_at.get(&(p as u32, r.offset)) {
                if let Some(&(prev_seq, prev_offset)) = last.get(&producer)
                    && prev_seq >= seq
                {
                    v.push(format!(
                        "{TOPIC}/{p}: p{producer}-s{seq} at {} follows p{producer}-s{prev_seq} at {prev_offset} (out of send order)",
                        r.offset
                    ));
                }
                last.insert(producer, (seq, r.offset));
            }
        }
    }

    // --- Each group.
    for (g, logs) in consumed.iter().enumerate() {
        let group = group_name(g as u32);
        let dlq_topic = format!("{TOPIC}.{group}.dlq");
        for log in logs {
            figures.consumer_errors += log.errors;
            for sample in &log.error_samples {
                if figures.consumer_error_samples.len() < 3 {
                    figures.consumer_error_samples.push(sample.clone());
                }
            }
        }
        // The DLQ.
        let mut parked: HashMap<(u32, u64), Parked> = HashMap::new();
        for (q, records) in contents.dlq[g].iter().enumerate() {
            let q = q as u32;
            for r in records {
                let at = format!("{dlq_topic}/{q}@{}", r.offset);
                let source_partition: Option<u32> =
                    header_str(r, "pigeon.dlq.source-partition").and_then(|s| s.parse().ok());
                let source_offset: Option<u64> =
                    header_str(r, "pigeon.dlq.source-offset").and_then(|s| s.parse().ok());
                let (Some(sp), Some(so)) = (source_partition, source_offset) else {
                    v.push(format!("{at}: no source partition/offset headers"));
                    continue;
                };
                if sp != q {
                    v.push(format!("{at}: parked in partition {q} but comes from {sp}"));
                }
                if header_str(r, "pigeon.dlq.source-topic") != Some(TOPIC)
                    || header_str(r, "pigeon.dlq.group") != Some(group.as_str())
                {
                    v.push(format!("{at}: wrong source topic or group headers"));
                }
                let content = record_hash(r.key.as_ref(), &r.value, &r.headers);
                if stored.get(sp as usize).and_then(|h| h.get(so as usize)) != Some(&content) {
                    v.push(format!(
                        "{at}: not equal to the source record {TOPIC}/{sp}@{so}"
                    ));
                }
                let attempts: u32 = header_str(r, "pigeon.dlq.attempts")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let reason = header_str(r, "pigeon.dlq.reason").unwrap_or("").to_string();
                let reason_text = header_str(r, "pigeon.dlq.reason-text")
                    .unwrap_or("")
                    .to_string();
                let at_ms: i64 = header_str(r, "pigeon.dlq.dead-lettered-ms")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                match reason.as_str() {
                    "max-deliveries" if attempts == config.max_deliveries => {
                        figures.dead_lettered_max_deliveries += 1;
                    }
                    "rejected" if (1..=config.max_deliveries).contains(&attempts) => {}
                    _ => v.push(format!(
                        "{at} ({TOPIC}/{sp}@{so}): reason {reason:?} with {attempts} attempts (max_deliveries {})",
                        config.max_deliveries
                    )),
                }
                figures.dead_lettered += 1;
                if parked
                    .insert(
                        (sp, so),
                        Parked {
                            attempts,
                            reason,
                            reason_text,
                            at_ms,
                        },
                    )
                    .is_some()
                {
                    v.push(format!(
                        "{at}: {TOPIC}/{sp}@{so} is parked twice in {dlq_topic}"
                    ));
                }
            }
        }

        // Deliveries and settles by record.
        let mut seen: HashMap<(u32, u64), Vec<&Seen>> = HashMap::new();
        let mut settles: HashMap<(u32, u64), Vec<&Settled>> = HashMap::new();
        for log in logs {
            for s in &log.seen {
                seen.entry((s.partition, s.offset)).or_default().push(s);
            }
            for s in &log.settled {
                settles.entry((s.partition, s.offset)).or_default().push(s);
                match (s.outcome, s.action) {
                    (SettleOutcome::Ok, Action::Ack) => figures.acks_ok += 1,
                    (SettleOutcome::Ok, Action::Nack) => figures.nacks_ok += 1,
                    (SettleOutcome::Ok, Action::Reject) => figures.rejects_ok += 1,
                    (SettleOutcome::LeaseLost, _) => figures.lease_lost += 1,
                    (SettleOutcome::Unknown, _) => figures.settles_unknown += 1,
                }
            }
        }
        for list in seen.values_mut() {
            list.sort_by_key(|s| (s.leased_ms, s.attempt, s.id));
        }
        // The delivery each settle applied to. The broker applies a
        // settle to whatever lease the consumer id holds on the offset: when
        // a lease expired and the message came back to the same consumer,
        // the late settle of the old delivery settles the new one (see the
        // ignored test `a_late_ack_of_an_expired_lease_is_lease_lost_…`).
        let seen_by_id: HashMap<u64, &Seen> = seen.values().flatten().map(|d| (d.id, *d)).collect();
        let mut by_delivery: HashMap<u64, Vec<&Settled>> = HashMap::new();
        for list in settles.values() {
            for s in list {
                let mut target = s.delivery;
                if s.outcome == SettleOutcome::Ok
                    && matches!(s.action, Action::Ack | Action::Reject)
                    && let Some(own) = seen_by_id.get(&s.delivery)
                    && let Some(newer) = seen.get(&(s.partition, s.offset)).and_then(|list| {
                        list.iter().rev().find(|d| {
                            d.consumer == own.consumer
                                && d.member == own.member
                                && (d.leased_ms, d.attempt, d.id)
                                    > (own.leased_ms, own.attempt, own.id)
                                && d.leased_ms <= s.done_ms + CLOCK_SLACK_MS
                                // Across a kill the ids start again: the
                                // same id in two broker runs is two
                                // memberships, and a settle sent on the
                                // old connection never reaches the new run.
                                && kill_between(kills, own.leased_ms, d.leased_ms).is_none()
                        })
                    })
                {
                    target = newer.id;
                    figures.stale_settles_redirected += 1;
                }
                by_delivery.entry(target).or_default().push(s);
            }
        }
        let ok = |delivery: u64, action: Action| -> Option<&Settled> {
            by_delivery.get(&delivery).and_then(|list| {
                list.iter()
                    .find(|s| s.action == action && s.outcome == SettleOutcome::Ok)
                    .copied()
            })
        };
        let mut delivered_somewhere: HashSet<(u32, u64)> = HashSet::new();
        let mut parked_then_acked = 0u64;
        for (p, hashes) in stored.iter().enumerate() {
            let p = p as u32;
            for (offset, content) in hashes.iter().enumerate() {
                let offset = offset as u64;
                let key = (p, offset);
                let what = format!("{group}: {TOPIC}/{p}@{offset}");
                let deliveries = seen.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let settled = settles.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let dead = parked.get(&key);
                if deliveries.is_empty() {
                    v.push(format!("{what}: never delivered (parked: {dead:?})"));
                    continue;
                }
                delivered_somewhere.insert(key);
                figures.deliveries += deliveries.len() as u64;
                figures.redeliveries += deliveries.len() as u64 - 1;
                // In lease order. A lease after one whose ack (or reject)
                // the broker answered OK, after the DLQ copy, or with an
                // attempt number that did not grow, needs a crash between.
                for (i, d) in deliveries.iter().enumerate() {
                    if d.content != *content || d.identity.is_none() {
                        v.push(format!(
                            "{what}: delivery #{} (attempt {}, consumer {}) was damaged or not the log's record",
                            d.id, d.attempt, d.consumer
                        ));
                    }
                    if d.attempt == 0 || d.attempt > config.max_deliveries {
                        v.push(format!(
                            "{what}: delivered as attempt {} (max_deliveries {})",
                            d.attempt, config.max_deliveries
                        ));
                    }
                    let Some(prev) = i.checked_sub(1).map(|j| deliveries[j]) else {
                        continue;
                    };
                    if d.attempt <= prev.attempt {
                        if kill_between(kills, prev.leased_ms, d.leased_ms).is_some() {
                            figures.attempt_repeats += 1;
                        } else {
                            v.push(format!(
                                "{what}: attempt {} leased at {} after attempt {} leased at {}, with no kill between",
                                d.attempt, d.leased_ms, prev.attempt, prev.leased_ms
                            ));
                        }
                    }
                    for (action, counter) in [
                        (Action::Ack, &mut figures.ack_window_redeliveries),
                        (Action::Reject, &mut figures.reject_window_redeliveries),
                    ] {
                        let earlier = deliveries[..i].iter().rev().find_map(|e| ok(e.id, action));
                        if let Some(s) = earlier {
                            match kill_between(kills, s.sent_ms, d.leased_ms) {
                                Some(k) => {
                                    *counter += 1;
                                    if action == Action::Ack {
                                        figures.max_ack_to_kill_ms =
                                            figures.max_ack_to_kill_ms.max(k.start_ms - s.done_ms);
                                    }
                                }
                                None => v.push(format!(
                                    "{what}: leased again (attempt {}) at {} after a {action:?} answered OK at {}, with no kill between",
                                    d.attempt, d.leased_ms, s.done_ms
                                )),
                            }
                        }
                    }
                    if let Some(dead) = dead
                        && dead.at_ms + CLOCK_SLACK_MS < d.leased_ms
                    {
                        if kill_between(kills, dead.at_ms, d.leased_ms).is_some() {
                            figures.dlq_window_redeliveries += 1;
                        } else {
                            v.push(format!(
                                "{what}: leased (attempt {}) at {} after its DLQ copy was written at {}, with no kill between",
                                d.attempt, d.leased_ms, dead.at_ms
                            ));
                        }
                    }
                }
                // How it ended.
                let last = deliveries[deliveries.len() - 1];
                // Acked: answered OK, or the answer was lost (an ack of
                // an earlier delivery to the same membership sent after
                // this lease began may have settled it too).
                let acked_last = by_delivery.get(&last.id).is_some_and(|list| {
                    list.iter()
                        .any(|s| s.action == Action::Ack && s.outcome != SettleOutcome::LeaseLost)
                }) || settled.iter().any(|s| {
                    s.action == Action::Ack
                        && s.outcome == SettleOutcome::Unknown
                        && s.sent_ms + CLOCK_SLACK_MS >= last.leased_ms
                        && seen_by_id.get(&s.delivery).is_some_and(|own| {
                            own.consumer == last.consumer && own.member == last.member
                        })
                });
                // Parked, then leased again after a crash and acked: the
                // broker counts it as acked, not dead-lettered.
                if acked_last && dead.is_some_and(|dead| dead.at_ms <= last.leased_ms) {
                    parked_then_acked += 1;
                }
                if !acked_last && dead.is_none() {
                    v.push(format!(
                        "{what}: its last delivery (attempt {} leased at {}) was not acked and it is not in {dlq_topic}; settles: {:?}",
                        last.attempt,
                        last.leased_ms,
                        settled
                            .iter()
                            .map(|s| (s.action, s.outcome, s.sent_ms))
                            .collect::<Vec<_>>()
                    ));
                }
                let poison = identity_at.get(&key).is_some_and(|&(_, _, poison)| poison);
                if poison && dead.is_none_or(|d| d.reason != "max-deliveries") {
                    v.push(format!(
                        "{what}: a poison record (always nacked) is not parked for max-deliveries: {dead:?}"
                    ));
                }
                if let Some(dead) = dead {
                    if dead.reason == "rejected" {
                        let expected = reject_reason(identity_at.get(&key).copied());
                        let rejected = settled.iter().any(|s| {
                            s.action == Action::Reject && s.outcome != SettleOutcome::LeaseLost
                        });
                        if !rejected || dead.reason_text != expected {
                            v.push(format!(
                                "{what}: parked as rejected ({:?}) but no consumer rejected it so",
                                dead.reason_text
                            ));
                        }
                    }
                    let acked = settled
                        .iter()
                        .filter(|s| s.action == Action::Ack && s.outcome == SettleOutcome::Ok);
                    for s in acked {
                        let (from, to) = (s.sent_ms.min(dead.at_ms), s.done_ms.max(dead.at_ms));
                        if kill_between(kills, from, to).is_some() {
                            figures.acked_and_dead_lettered += 1;
                        } else {
                            v.push(format!(
                                "{what}: acked OK at {} and parked at {} ({}, {} attempts) with no kill between",
                                s.done_ms, dead.at_ms, dead.reason, dead.attempts
                            ));
                        }
                    }
                }
            }
        }
        // Deliveries of records that are not in the log.
        for (key, list) in &seen {
            if !delivered_somewhere.contains(key)
                && stored
                    .get(key.0 as usize)
                    .is_none_or(|h| h.len() as u64 <= key.1)
            {
                v.push(format!(
                    "{group}: {} deliveries of {TOPIC}/{}@{}, which is not in the log",
                    list.len(),
                    key.0,
                    key.1
                ));
            }
        }
        for key in parked.keys() {
            if stored
                .get(key.0 as usize)
                .is_none_or(|h| h.len() as u64 <= key.1)
            {
                v.push(format!(
                    "{dlq_topic} parks {TOPIC}/{}@{}, which is not in the log",
                    key.0, key.1
                ));
            }
        }
        // The broker's own account after the clean restart.
        let described = &contents.described[g];
        figures.parked_then_acked += parked_then_acked;
        let counted: u64 = described.partitions.iter().map(|p| p.dead_lettered).sum();
        if !drained(described) || counted != parked.len() as u64 - parked_then_acked {
            v.push(format!(
                "{group} after the clean restart: {:?} ({} parked in {dlq_topic}, {parked_then_acked} of them then acked)",
                described.partitions,
                parked.len()
            ));
        }
        if contents.leftovers[g] > 0 {
            v.push(format!(
                "{group}: a new consumer got {} deliveries after the clean restart",
                contents.leftovers[g]
            ));
        }
    }
    v
}
