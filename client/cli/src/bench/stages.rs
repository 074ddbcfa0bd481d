//! The broker's own account of where each append's time went during a
//! run: its `pigeon_append_stage_seconds` histograms (stages `queued`,
//! `write`, `fsync`, `wake`; see the broker's `log::stats::Stage`),
//! scraped from its `/metrics` before and after the timed phase and
//! subtracted.
//!
//! Why scraping: the histograms are what the broker already exposes, so
//! the bench needs no request of its own and shows exactly what an
//! operator's Prometheus would. What that implies, and what the report
//! says with the figures:
//!
//! - the difference covers **every append the broker made** in the window,
//!   not only the bench's (another client producing at the same time would
//!   count too), and one observation is one appended batch, not one
//!   message;
//! - percentiles are estimated from the buckets the way Prometheus'
//!   `histogram_quantile` does (linear within the bucket that holds the
//!   rank), so they are as fine as the buckets: 10–25 µs steps below
//!   300 µs, 100–250 µs up to 1.5 ms, coarser above; the mean is exact
//!   (`_sum / _count`).
//!
//! [`scrape`] is a plain HTTP/1.0 `GET /metrics` (no TLS), enough for the
//! broker's HTTP listener on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histogram family scraped.
pub const FAMILY: &str = "pigeon_append_stage_seconds";
/// Its stages, in the order of an append.
pub const STAGES: [&str; 4] = ["queued", "write", "fsync", "wake"];
/// Longest a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/metrics` answer read.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// One histogram as scraped: cumulative counts per upper bound (seconds,
/// ascending, the last `+Inf`), and the sum of the observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// Upper bounds, seconds; `f64::INFINITY` for `+Inf`.
    pub bounds: Vec<f64>,
    /// Observations at or below each bound.
    pub cumulative: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl Buckets {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// What was observed since `before` (same bounds; otherwise the broker
    /// restarted or changed, and `self` is returned whole).
    pub fn since(&self, before: &Buckets) -> Buckets {
        if before.bounds != self.bounds {
            return self.clone();
        }
        Buckets {
            bounds: self.bounds.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(&before.cumulative)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum: (self.sum - before.sum).max(0.0),
        }
    }

    /// The `q` quantile in seconds, as `histogram_quantile` estimates it:
    /// linear within the bucket holding the rank; the last finite bound
    /// when the rank is in `+Inf`; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let count = self.count();
        if count == 0 {
            return 0.0;
        }
        let rank = q * count as f64;
        let Some(b) = self.cumulative.iter().position(|c| *c as f64 >= rank) else {
            return 0.0;
        };
        let upper = self.bounds[b];
        let lower = if b == 0 { 0.0 } else { self.bounds[b - 1] };
        if upper.is_infinite() {
            return lower;
        }
        let below = if b == 0 { 0 } else { self.cumulative[b - 1] };
        let inside = self.cumulative[b] - below;
        if inside == 0 {
            return upper;
        }
        lower + (upper - lower) * (rank - below as f64) / inside as f64
    }
}

/// The stage histograms at one scrape, by stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageCounts {
    /// Stage label → its histogram.
    pub stages: BTreeMap<String, Buckets>,
}

/// One stage's figures over a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StageFigures {
    /// `queued`, `write`, `fsync` or `wake`.
    pub stage: String,
    /// Appends observed.
    pub count: u64,
    /// Exact mean, µs.
    pub mean_us: f64,
    /// Estimated from the buckets, µs.
    pub p50_us: u64,
    /// Estimated from the buckets, µs.
    pub p99_us: u64,
    /// Estimated from the buckets, µs.
    pub p999_us: u64,
}

impl StageFigures {
    /// As JSON: `count`, `mean_us`, `p50_us`, `p99_us`, `p999_us`.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "mean_us": (self.mean_us * 10.0).round() / 10.0,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
        })
    }
}

impl StageCounts {
    /// The stage histograms of a `/metrics` text (other lines ignored; a
    /// line that does not parse is skipped).
    pub fn parse(text: &str) -> StageCounts {
        let mut stages: BTreeMap<String, Buckets> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(FAMILY) else {
                continue;
            };
            let Some((suffix, labels, value)) = split_sample(rest) else {
                continue;
            };
            let Some(stage) = label(labels, "stage") else {
                continue;
            };
            let entry = stages.entry(stage.to_string()).or_default();
            match suffix {
                "_bucket" => {
                    let (Some(le), Ok(count)) = (label(labels, "le"), value.parse::<f64>()) else {
                        continue;
                    };
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        match le.parse::<f64>() {
                            Ok(bound) => bound,
                            Err(_) => continue,
                        }
                    };
                    entry.bounds.push(bound);
                    entry.cumulative.push(count as u64);
                }
                "_sum" => entry.sum = value.parse().unwrap_or(0.0),
                _ => {}
            }
        }
        StageCounts { stages }
    }

    /// What was observed since `before`.
    pub fn since(&self, before: &StageCounts) -> StageCounts {
        let stages = self
            .stages
            .iter()
            .map(|(stage, now)| {
                let diff = match before.stages.get(stage) {
                    Some(then) => now.since(then),
                    None => now.clone(),
                };
                (stage.clone(), diff)
            })
            .collect();
        StageCounts { stages }
    }

    /// Each stage's figures, in the order of an append (stages the broker
    /// did not show are left out).
    pub fn figures(&self) -> Vec<StageFigures> {
        let us = |seconds: f64| (seconds * 1e6).round() as u64;
        STAGES
            .iter()
            .filter_map(|stage| {
                let b = self.stages.get(*stage)?;
                let count = b.count();
                Some(StageFigures {
                    stage: (*stage).to_string(),
                    count,
                    mean_us: if count == 0 {
                        0.0
                    } else {
                        b.sum * 1e6 / count as f64
                    },
                    p50_us: us(b.quantile(0.5)),
                    p99_us: us(b.quantile(0.99)),
                    p999_us: us(b.quantile(0.999)),
                })
            })
            .collect()
    }
}

/// `_suffix{labels} value` → its three parts.
fn split_sample(rest: &str) -> Option<(&str, &str, &str)> {
    let open = rest.find('{')?;
    let close = rest.rfind('}')?;
    let value = rest[close + 1..].split_whitespace().next()?;
    Some((&rest[..open], &rest[open + 1..close], value))
}

/// The value of label `name` in `a="x",b="y"` (values without escapes,
/// as the stage and `le` labels are).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|pair| {
        let (key, value) = pair.split_once("=\"")?;
        (key.trim() == name).then(|| value.trim_end_matches('"'))
    })
}

/// `GET /metrics` from the broker's HTTP listener at `addr` (`host:port`).
pub async fn scrape(addr: &str) -> anyhow::Result<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the broker's HTTP listener at {addr}"))?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .with_context(|| format!("no answer from {addr}/metrics within {SCRAPE_TIMEOUT:?}"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr}/metrics: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!("{addr}/metrics answered `{status}`, not 200");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# HELP pigeon_append_stage_seconds Where each append spent its time.
# TYPE pigeon_append_stage_seconds histogram
pigeon_append_stage_seconds_bucket{stage=\"fsync\",le=\"0.0001\"} 1
pigeon_append_stage_seconds_bucket{stage=\"fsync\",le=\"0.0002\"} 1
pigeon_append_stage_seconds_bucket{stage=\"fsync\",le=\"+Inf\"} 1
pigeon_append_stage_seconds_sum{stage=\"fsync\"} 0.00005
pigeon_append_stage_seconds_count{stage=\"fsync\"} 1
pigeon_log_fsync_seconds_bucket{topic=\"t\",partition=\"0\",le=\"0.0001\"} 9
";

    const AFTER: &str = "\
pigeon_append_stage_seconds_bucket{stage=\"fsync\",le=\"0.0001\"} 1
pigeon_append_stage_seconds_bucket{stage=\"fsync\",le=\"0.0002\"} 101
pigeon_append_stage_seconds_bucket{stage=\"fsync\",le=\"+Inf\"} 111
pigeon_append_stage_seconds_sum{stage=\"fsync\"} 0.04505
pigeon_append_stage_seconds_count{stage=\"fsync\"} 111
pigeon_append_stage_seconds_bucket{stage=\"wake\",le=\"0.0001\"} 0
pigeon_append_stage_seconds_bucket{stage=\"wake\",le=\"+Inf\"} 0
pigeon_append_stage_seconds_sum{stage=\"wake\"} 0
";

    #[test]
    fn the_difference_of_two_scrapes_gives_each_stage_of_the_window() {
        let window = StageCounts::parse(AFTER).since(&StageCounts::parse(BEFORE));
        let figures = window.figures();
        let stages: Vec<&str> = figures.iter().map(|f| f.stage.as_str()).collect();
        assert_eq!(
            stages,
            ["fsync", "wake"],
            "in append order, shown ones only"
        );
        let fsync = &figures[0];
        assert_eq!(fsync.count, 110);
        assert!((fsync.mean_us - 409.1).abs() < 0.1, "{fsync:?}");
        // Rank 55 of 110 is the 55th of the 100 in (100 µs, 200 µs].
        assert_eq!(fsync.p50_us, 155);
        // Rank 108.9 is in +Inf: the last finite bound.
        assert_eq!(fsync.p99_us, 200);
        assert_eq!(figures[1].count, 0);
        assert_eq!(figures[1].p99_us, 0);
        assert_eq!(fsync.to_json()["count"], 110);
    }

    #[test]
    fn quantiles_interpolate_like_histogram_quantile() {
        let b = Buckets {
            bounds: vec![0.001, 0.002, f64::INFINITY],
            cumulative: vec![50, 100, 100],
            sum: 0.1,
        };
        assert!((b.quantile(0.25) - 0.0005).abs() < 1e-12);
        assert!((b.quantile(0.75) - 0.0015).abs() < 1e-12);
        assert_eq!(Buckets::default().quantile(0.5), 0.0);
    }

    #[test]
    fn a_restarted_broker_is_not_subtracted() {
        let before = StageCounts::parse(AFTER);
        let mut after = StageCounts::parse(BEFORE);
        after
            .stages
            .get_mut("fsync")
            .expect("fsync")
            .bounds
            .push(1.0);
        let window = after.since(&before);
        assert_eq!(window.stages["fsync"], after.stages["fsync"]);
    }

    #[tokio::test]
    async fn a_scrape_reads_the_body_and_refuses_other_statuses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            for answer in ["HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.0 503 Busy\r\n\r\n"] {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let body = format!("{answer}{AFTER}");
                socket.write_all(body.as_bytes()).await.expect("write");
            }
        });
        let body = scrape(&addr).await.expect("scrape");
        assert_eq!(StageCounts::parse(&body).stages.len(), 2);
        let err = scrape(&addr).await.expect_err("503");
        assert!(err.to_string().contains("503"), "{err}");
        server.await.expect("server");
    }
}
