//! [`Report`]: the figures of one run, as a struct, as JSON
//! ([`Report::to_json`]) and as the few lines `pigeon bench` prints
//! ([`Report::to_text`]).
//!
//! Invariants: throughput counts only the timed phase (`seconds`), bytes
//! count values only (no keys, headers or framing), MB are 10^6 bytes, and
//! every latency is in whole microseconds.

use serde_json::{Value, json};

use super::floor::Floor;
use super::latency::{Latency, Percentiles};
use super::stages::StageFigures;
use super::window::Seen;
use super::workload::Workload;

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `produce`, `consume` or `e2e`.
    pub workload: String,
    /// The target's name (`pigeon`, `redis`, `nats`).
    pub target: String,
    /// Messages counted: acked (produce), or consumed and acked once each
    /// (consume, e2e; redeliveries are not counted again).
    pub messages: u64,
    /// `messages` × value size.
    pub bytes: u64,
    /// Length of the timed phase.
    pub seconds: f64,
    /// `messages / seconds`.
    pub msgs_per_sec: f64,
    /// `bytes / seconds / 10^6`.
    pub mb_per_sec: f64,
    /// Median of the primary latency (see [`Report::latency`]).
    pub p50_us: u64,
    /// 99th percentile of the primary latency.
    pub p99_us: u64,
    /// 99.9th percentile of the primary latency.
    pub p999_us: u64,
    /// Largest primary latency.
    pub max_us: u64,
    /// e2e only: median publish→ack latency.
    pub ack_p50_us: Option<u64>,
    /// e2e only: 99th percentile of publish→ack.
    pub ack_p99_us: Option<u64>,
    /// e2e only: 99.9th percentile of publish→ack.
    pub ack_p999_us: Option<u64>,
    /// e2e only: largest publish→ack latency.
    pub ack_max_us: Option<u64>,
    /// What the primary latency measures, e.g. `publish→ack per message`.
    pub latency: String,
    /// Bytes per value.
    pub value_size: usize,
    /// Publishers.
    pub producers: usize,
    /// Group members (0 for produce).
    pub consumers: usize,
    /// Partitions of the topic.
    pub partitions: u32,
    /// The fixed rate asked for, if any.
    pub rate: Option<u64>,
    /// With a rate: how late the harness actually published (actual minus
    /// scheduled time), p99 in µs; included in every latency above.
    pub schedule_lag_p99_us: Option<u64>,
    /// With a rate: the largest such lateness.
    pub schedule_lag_max_us: Option<u64>,
    /// Deliveries of messages already counted (redeliveries), not counted
    /// again in `messages`.
    pub redeliveries: u64,
    /// The disk's fsync floor measured alongside the timed phase, if asked.
    pub fsync_floor: Option<Floor>,
    /// The system's own stage figures over the timed phase, if it exposes
    /// them (one observation per appended batch, every client's).
    pub stages: Option<Vec<StageFigures>>,
    /// CPU seconds (user + system) the server process used in the timed
    /// phase, when its pid was given.
    pub server_cpu_seconds: Option<f64>,
    /// The 1-minute load average at the start and at the end of the phase.
    pub load_average: Option<(f64, f64)>,
}

/// What a run measured, handed to [`Report::new`].
#[derive(Debug, Default)]
pub struct Measured {
    /// Messages counted.
    pub messages: u64,
    /// Length of the timed phase, ns.
    pub nanos: u64,
    /// The primary latency.
    pub primary: Latency,
    /// publish→ack, for e2e.
    pub acks: Option<Latency>,
    /// How late messages went out, with a rate.
    pub schedule_lag: Option<Latency>,
    /// Redeliveries seen.
    pub redeliveries: u64,
    /// The fsync floor and the stages of the timed phase.
    pub seen: Seen,
}

impl Report {
    /// The report of `workload` run against `target`.
    pub fn new(target: &str, workload: &Workload, measured: &Measured) -> Report {
        let seconds = measured.nanos as f64 / 1e9;
        let bytes = measured.messages.saturating_mul(workload.value_size as u64);
        // A run shorter than a nanosecond cannot be timed: report no rate.
        let per_sec = |n: u64| {
            if measured.nanos == 0 {
                0.0
            } else {
                n as f64 / seconds
            }
        };
        let primary = measured.primary.percentiles();
        let acks = measured.acks.as_ref().map(Latency::percentiles);
        let lag = measured.schedule_lag.as_ref().map(Latency::percentiles);
        let field = |p: Option<Percentiles>, f: fn(&Percentiles) -> u64| p.as_ref().map(f);
        Report {
            workload: workload.kind.as_str().to_string(),
            target: target.to_string(),
            messages: measured.messages,
            bytes,
            seconds,
            msgs_per_sec: per_sec(measured.messages),
            mb_per_sec: per_sec(bytes) / 1e6,
            p50_us: primary.p50,
            p99_us: primary.p99,
            p999_us: primary.p999,
            max_us: primary.max,
            ack_p50_us: field(acks, |p| p.p50),
            ack_p99_us: field(acks, |p| p.p99),
            ack_p999_us: field(acks, |p| p.p999),
            ack_max_us: field(acks, |p| p.max),
            latency: workload.kind.latency().to_string(),
            value_size: workload.value_size,
            producers: workload.producers,
            consumers: if workload.kind.consumes() {
                workload.consumers
            } else {
                0
            },
            partitions: workload.partitions,
            rate: workload.rate,
            schedule_lag_p99_us: field(lag, |p| p.p99),
            schedule_lag_max_us: field(lag, |p| p.max),
            redeliveries: measured.redeliveries,
            fsync_floor: measured.seen.floor.clone(),
            stages: measured.seen.stages.clone(),
            server_cpu_seconds: measured.seen.server_cpu.map(|d| d.as_secs_f64()),
            load_average: measured.seen.load,
        }
    }

    /// Server CPU µs per message counted (when both are known).
    pub fn server_cpu_us_per_message(&self) -> Option<f64> {
        let seconds = self.server_cpu_seconds?;
        (self.messages > 0).then(|| seconds * 1e6 / self.messages as f64)
    }

    /// The report as one JSON object (absent figures are `null`).
    ///
    /// ```
    /// use pigeon_cli::bench::{Report, Workload, WorkloadKind};
    /// use pigeon_cli::bench::report::Measured;
    /// let workload = Workload::new(WorkloadKind::Produce);
    /// let measured = Measured { messages: 10, nanos: 1_000_000_000, ..Measured::default() };
    /// let json = Report::new("pigeon", &workload, &measured).to_json();
    /// assert_eq!(json["msgs_per_sec"], 10.0);
    /// assert!(json["ack_p99_us"].is_null());
    /// ```
    pub fn to_json(&self) -> Value {
        json!({
            "workload": self.workload,
            "target": self.target,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "msgs_per_sec": self.msgs_per_sec,
            "mb_per_sec": self.mb_per_sec,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "ack_p50_us": self.ack_p50_us,
            "ack_p99_us": self.ack_p99_us,
            "ack_p999_us": self.ack_p999_us,
            "ack_max_us": self.ack_max_us,
            "latency": self.latency,
            "value_size": self.value_size,
            "producers": self.producers,
            "consumers": self.consumers,
            "partitions": self.partitions,
            "rate": self.rate,
            "schedule_lag_p99_us": self.schedule_lag_p99_us,
            "schedule_lag_max_us": self.schedule_lag_max_us,
            "redeliveries": self.redeliveries,
            "server_cpu_seconds": self.server_cpu_seconds,
            "server_cpu_us_per_message": self.server_cpu_us_per_message(),
            "load_average_start": self.load_average.map(|l| l.0),
            "load_average_end": self.load_average.map(|l| l.1),
            "fsync_floor": self.fsync_floor.as_ref().map(Floor::to_json),
            "stages": self.stages.as_ref().map(|stages| {
                stages
                    .iter()
                    .map(|s| (s.stage.clone(), s.to_json()))
                    .collect::<serde_json::Map<String, Value>>()
            }),
        })
    }

    /// A few aligned lines for people.
    ///
    /// ```
    /// use pigeon_cli::bench::{Report, Workload, WorkloadKind};
    /// use pigeon_cli::bench::report::Measured;
    /// let workload = Workload::new(WorkloadKind::Produce);
    /// let measured = Measured { messages: 10, nanos: 1_000_000_000, ..Measured::default() };
    /// let text = Report::new("pigeon", &workload, &measured).to_text();
    /// assert!(text.contains("10 msgs/s"));
    /// ```
    pub fn to_text(&self) -> String {
        let mut rows = vec![
            (
                "workload".to_string(),
                format!(
                    "{} against {}: {} B values, {} producer(s), {} consumer(s), {} partition(s){}",
                    self.workload,
                    self.target,
                    self.value_size,
                    self.producers,
                    self.consumers,
                    self.partitions,
                    self.rate
                        .map_or(String::new(), |r| format!(", rate {r} msgs/s"))
                ),
            ),
            (
                "throughput".to_string(),
                format!(
                    "{} messages in {:.3} s = {:.0} msgs/s, {:.1} MB/s",
                    self.messages, self.seconds, self.msgs_per_sec, self.mb_per_sec
                ),
            ),
            (
                format!("latency ({})", self.latency),
                percentiles_text(self.p50_us, self.p99_us, self.p999_us, self.max_us),
            ),
        ];
        if let (Some(p50), Some(p99), Some(p999), Some(max)) = (
            self.ack_p50_us,
            self.ack_p99_us,
            self.ack_p999_us,
            self.ack_max_us,
        ) {
            rows.push((
                "latency (publish→ack per message)".to_string(),
                percentiles_text(p50, p99, p999, max),
            ));
        }
        if let (Some(p99), Some(max)) = (self.schedule_lag_p99_us, self.schedule_lag_max_us) {
            rows.push((
                "publish lateness (harness)".to_string(),
                format!("p99 {p99} µs, max {max} µs (included in the latencies)"),
            ));
        }
        rows.extend(self.floor_rows());
        if self.redeliveries > 0 {
            rows.push((
                "redeliveries".to_string(),
                format!("{} (not counted again)", self.redeliveries),
            ));
        }
        let width = rows
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        rows.iter()
            .map(|(name, value)| {
                let pad = width - name.chars().count();
                format!("{name}{}  {value}\n", " ".repeat(pad))
            })
            .collect()
    }
}

impl Report {
    /// The fsync floor, how far the ack p99 is above it, and the stages.
    fn floor_rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        if let Some(floor) = &self.fsync_floor {
            let l = floor.latency;
            rows.push((
                "disk floor (4 KiB + fdatasync)".to_string(),
                format!(
                    "{}, {} rounds in {}",
                    percentiles_text(l.p50, l.p99, l.p999, l.max),
                    floor.rounds,
                    floor.dir.display()
                ),
            ));
            let ack_p99 = self
                .ack_p99_us
                .or((self.workload == "produce").then_some(self.p99_us));
            if let Some(ack) = ack_p99 {
                rows.push((
                    "publish→ack p99 − floor p99".to_string(),
                    format!("{} µs", ack as i64 - l.p99 as i64),
                ));
            }
        }
        if let (Some(seconds), Some(per)) =
            (self.server_cpu_seconds, self.server_cpu_us_per_message())
        {
            rows.push((
                "server CPU (user + system)".to_string(),
                format!("{seconds:.2} s, {per:.2} µs per message"),
            ));
        }
        if let Some((start, end)) = self.load_average {
            rows.push((
                "load average (1 min)".to_string(),
                format!("{start:.2} at the start, {end:.2} at the end"),
            ));
        }
        for stage in self.stages.iter().flatten() {
            rows.push((
                format!("broker stage {}", stage.stage),
                format!(
                    "mean {:.0} µs, p50 {} µs, p99 {} µs, p99.9 {} µs ({} appends; from buckets)",
                    stage.mean_us, stage.p50_us, stage.p99_us, stage.p999_us, stage.count
                ),
            ));
        }
        rows
    }
}

fn percentiles_text(p50: u64, p99: u64, p999: u64, max: u64) -> String {
    format!("p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs, max {max} µs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::WorkloadKind;

    fn measured(kind: WorkloadKind) -> (Workload, Measured) {
        let mut workload = Workload::new(kind);
        workload.value_size = 1000;
        let mut primary = Latency::new();
        for us in 1..=100 {
            primary.record_us(us);
        }
        let measured = Measured {
            messages: 2_000,
            nanos: 500_000_000,
            primary,
            ..Measured::default()
        };
        (workload, measured)
    }

    #[test]
    fn the_json_has_every_contract_field_with_consistent_figures() {
        let (workload, measured) = measured(WorkloadKind::Produce);
        let json = Report::new("pigeon", &workload, &measured).to_json();
        for field in [
            "workload",
            "messages",
            "bytes",
            "seconds",
            "msgs_per_sec",
            "mb_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(!json[field].is_null(), "{field} missing in {json}");
        }
        assert_eq!(json["workload"], "produce");
        assert_eq!(json["target"], "pigeon");
        assert_eq!(json["messages"], 2_000);
        assert_eq!(json["bytes"], 2_000_000);
        assert_eq!(json["seconds"], 0.5);
        assert_eq!(json["msgs_per_sec"], 4_000.0);
        assert_eq!(json["mb_per_sec"], 4.0);
        assert_eq!(json["p50_us"], 50);
        assert_eq!(json["p99_us"], 99);
        assert_eq!(json["max_us"], 100);
        assert_eq!(json["consumers"], 0);
        assert!(json["ack_p50_us"].is_null());
        assert!(json["rate"].is_null());
    }

    #[test]
    fn an_e2e_report_carries_the_ack_latencies() {
        let (mut workload, mut measured) = measured(WorkloadKind::E2e);
        workload.rate = Some(10_000);
        let mut acks = Latency::new();
        acks.record_us(7);
        measured.acks = Some(acks);
        measured.schedule_lag = Some(Latency::new());
        let report = Report::new("redis", &workload, &measured);
        let json = report.to_json();
        assert_eq!(json["workload"], "e2e");
        assert_eq!(json["ack_p50_us"], 7);
        assert_eq!(json["ack_max_us"], 7);
        assert_eq!(json["rate"], 10_000);
        assert_eq!(json["consumers"], 1);
        assert_eq!(json["schedule_lag_p99_us"], 0);
        assert!(report.to_text().contains("publish→ack"));
    }

    #[test]
    fn the_floor_and_the_stages_go_next_to_the_latencies() {
        let (mut workload, mut measured) = measured(WorkloadKind::E2e);
        workload.rate = Some(10_000);
        let mut acks = Latency::new();
        acks.record_us(900);
        measured.acks = Some(acks);
        let mut probe = Latency::new();
        probe.record_us(400);
        measured.seen.floor = Some(Floor {
            dir: "/data".into(),
            rounds: 1,
            latency: probe.percentiles(),
        });
        measured.seen.stages = Some(vec![StageFigures {
            stage: "fsync".into(),
            count: 7,
            mean_us: 412.34,
            p50_us: 400,
            p99_us: 700,
            p999_us: 750,
        }]);
        measured.seen.server_cpu = Some(std::time::Duration::from_millis(500));
        measured.seen.load = Some((1.5, 2.25));
        let report = Report::new("pigeon", &workload, &measured);
        let json = report.to_json();
        assert_eq!(json["server_cpu_seconds"], 0.5);
        assert_eq!(json["server_cpu_us_per_message"], 250.0, "0.5 s over 2,000");
        assert_eq!(json["load_average_end"], 2.25);
        assert_eq!(json["fsync_floor"]["p99_us"], 400);
        assert_eq!(json["fsync_floor"]["rounds"], 1);
        assert_eq!(json["fsync_floor"]["dir"], "/data");
        assert_eq!(json["stages"]["fsync"]["count"], 7);
        assert_eq!(json["stages"]["fsync"]["mean_us"], 412.3);
        let text = report.to_text();
        assert!(text.contains("p50 400 µs, p99 400 µs"), "{text}");
        let over = text
            .lines()
            .find(|l| l.contains("− floor p99"))
            .expect("the gap");
        assert!(over.ends_with(" 500 µs"), "{text}");
        assert!(text.contains("broker stage fsync"), "{text}");
        assert!(text.contains("250.00 µs per message"), "{text}");
        let plain = Report::new("pigeon", &workload, &self::measured(WorkloadKind::E2e).1);
        assert!(plain.to_json()["fsync_floor"].is_null());
        assert!(plain.to_json()["stages"].is_null());
        assert!(plain.to_json()["server_cpu_us_per_message"].is_null());
    }

    #[test]
    fn a_run_of_no_time_reports_no_rate_rather_than_infinity() {
        let (workload, mut measured) = measured(WorkloadKind::Consume);
        measured.nanos = 0;
        let json = Report::new("pigeon", &workload, &measured).to_json();
        assert_eq!(json["msgs_per_sec"], 0.0);
        assert_eq!(json["mb_per_sec"], 0.0);
    }

    #[test]
    fn the_text_lines_up_its_labels() {
        let (workload, measured) = measured(WorkloadKind::Consume);
        let text = Report::new("pigeon", &workload, &measured).to_text();
        let starts: Vec<usize> = text
            .lines()
            .map(|l| {
                let label_end = l.find("  ").expect("separator");
                let value = l[label_end..].trim_start();
                l[..l.len() - value.len()].chars().count()
            })
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{text}");
    }
}
