//! [`Report`]: the figures of one run, as a struct, as JSON
//! ([`Report::to_json`]) and as the few lines `pigeon bench` prints
//! ([`Report::to_text`]).
//!
//! Invariants: throughput counts only the timed phase (`seconds`), bytes
//! count values only (no keys, headers or framing), MB are 10^6 bytes, and
//! every latency is in whole microseconds.

use serde_json::{Value, json};

use super::latency::{Latency, Percentiles};
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
        }
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
