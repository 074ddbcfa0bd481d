//! A small writer of the Prometheus text exposition format (version
//! 0.0.4), for the families the broker renders itself at each scrape (see
//! [`super::scrape`] and [`super::process`]).
//!
//! Invariants the writer keeps, whatever it is given:
//! - a family's `# HELP` and `# TYPE` lines come first, once, and all its
//!   samples follow them without another family in between;
//! - label values are escaped (`\`, `"` and line feeds), so no resource
//!   name can break a line;
//! - a histogram's buckets are cumulative and ascending, end with
//!   `le="+Inf"` equal to `_count`, and come with `_sum`.
//!
//! Metric and label names are the callers' constants: they are not checked
//! here (the `/metrics` parser test checks the whole output).

use std::fmt::Write;

use crate::log::stats::HistogramSnapshot;

/// A metric family's type, as the `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Goes up only (restarts from zero with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Labels of one series, in the order written.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind.name());
}

/// Writes one sample line: `name{labels} value`.
pub fn sample(out: &mut String, name: &str, labels: Labels<'_>, value: f64) {
    out.push_str(name);
    write_labels(out, labels, None);
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

/// Writes the sample lines of one histogram series, its observations
/// divided by `scale` (1e9 turns nanoseconds into seconds; the bounds are
/// divided too): cumulative `_bucket` lines, then `_sum` and `_count`.
pub fn histogram(
    out: &mut String,
    name: &str,
    labels: Labels<'_>,
    histogram: &HistogramSnapshot,
    scale: f64,
) {
    let mut cumulative = 0;
    let bucket = format!("{name}_bucket");
    for (i, count) in histogram.counts.iter().enumerate() {
        cumulative += count;
        let le = match histogram.bounds.get(i) {
            Some(bound) => format_value(*bound as f64 / scale),
            None => "+Inf".to_owned(),
        };
        out.push_str(&bucket);
        write_labels(out, labels, Some(&le));
        let _ = writeln!(out, " {cumulative}");
    }
    sample(
        out,
        &format!("{name}_sum"),
        labels,
        histogram.sum as f64 / scale,
    );
    sample(out, &format!("{name}_count"), labels, cumulative as f64);
}

fn write_labels(out: &mut String, labels: Labels<'_>, le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (name, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A sample value as Prometheus reads it (`NaN`, `+Inf`, `-Inf` spelled
/// its way; integers without a fraction).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

fn push_value(out: &mut String, value: f64) {
    out.push_str(&format_value(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut out = String::new();
        family(&mut out, "pigeon_x", Kind::Gauge, "An x.\nSecond line.");
        sample(&mut out, "pigeon_x", &[("topic", "a\"b\\c\nd")], 1.5);
        sample(&mut out, "pigeon_x", &[], f64::INFINITY);
        assert_eq!(
            out,
            "# HELP pigeon_x An x.\\nSecond line.\n# TYPE pigeon_x gauge\n\
             pigeon_x{topic=\"a\\\"b\\\\c\\nd\"} 1.5\npigeon_x +Inf\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf_equal_to_its_count() {
        let snapshot = HistogramSnapshot {
            bounds: &[500_000, 1_000_000_000],
            counts: vec![2, 1, 3],
            sum: 4_000_000_000,
        };
        let mut out = String::new();
        histogram(&mut out, "h_seconds", &[("p", "0")], &snapshot, 1e9);
        assert_eq!(
            out,
            "h_seconds_bucket{p=\"0\",le=\"0.0005\"} 2\n\
             h_seconds_bucket{p=\"0\",le=\"1\"} 3\n\
             h_seconds_bucket{p=\"0\",le=\"+Inf\"} 6\n\
             h_seconds_sum{p=\"0\"} 4\n\
             h_seconds_count{p=\"0\"} 6\n"
        );
    }
}
