//! A strict reader of the Prometheus text exposition format (0.0.4), for
//! tests: [`parse`] takes a whole `/metrics` body and either returns its
//! families or says, with the line number, what breaks the format.
//!
//! What it checks, beyond the grammar of each line:
//! - every sample belongs to a family that has exactly one `# HELP` and one
//!   `# TYPE` line, both before its first sample;
//! - a family's samples are contiguous (no other family in between) and no
//!   series (name and label set) appears twice;
//! - metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
//!   `[a-zA-Z_][a-zA-Z0-9_]*` (not `__`-prefixed), label values are quoted
//!   with only `\\`, `\"` and `\n` escapes;
//! - a histogram series has `_bucket` lines with ascending `le` bounds
//!   ending at `+Inf`, cumulative counts that never go down, the `+Inf`
//!   count equal to `_count`, and a `_sum`;
//! - a counter's samples are not negative; a sample of a `counter` family is
//!   the family's name itself (the exporters name counters `*_total`).
//!
//! It is written from the format's specification, not derived from the
//! broker's writer, so it can catch the writer's mistakes.

use std::collections::{BTreeMap, BTreeSet};

/// A sample's labels, in order.
pub type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`x_bucket` for a histogram `x`).
    pub name: String,
    /// Its labels, in order.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Its name.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    /// Its help text.
    pub help: String,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

/// Parses and checks a whole exposition; the families by name.
pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            check_metric_name(name).map_err(at)?;
            if !helps.insert(name.to_owned()) {
                return Err(at(format!("a second # HELP for {name}")));
            }
            let family = families
                .entry(name.to_owned())
                .or_insert_with(|| empty(name));
            if !family.samples.is_empty() {
                return Err(at(format!("# HELP of {name} after its samples")));
            }
            family.help = unescape_help(help).map_err(at)?;
            switch(&mut current, &mut closed, name).map_err(at)?;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type".into()))?;
            check_metric_name(name).map_err(at)?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            let family = families
                .entry(name.to_owned())
                .or_insert_with(|| empty(name));
            if !family.kind.is_empty() {
                return Err(at(format!("a second # TYPE for {name}")));
            }
            if !family.samples.is_empty() {
                return Err(at(format!("# TYPE of {name} after its samples")));
            }
            family.kind = kind.to_owned();
            switch(&mut current, &mut closed, name).map_err(at)?;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = family_of(&families, &sample.name)
            .ok_or_else(|| at(format!("{} has no # TYPE line before it", sample.name)))?;
        switch(&mut current, &mut closed, &family).map_err(at)?;
        let key = format!("{}{:?}", sample.name, sample.labels);
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        let family = families
            .get_mut(&family)
            .ok_or_else(|| at("no family".into()))?;
        check_sample_in_family(family, &sample).map_err(at)?;
        family.samples.push(sample);
    }
    for family in families.values() {
        if family.kind.is_empty() {
            return Err(format!("{} has # HELP but no # TYPE", family.name));
        }
        if !helps.contains(&family.name) {
            return Err(format!("{} has no # HELP line", family.name));
        }
        if family.kind == "histogram" {
            check_histogram(family)?;
        }
    }
    Ok(families)
}

fn empty(name: &str) -> Family {
    Family {
        name: name.to_owned(),
        kind: String::new(),
        help: String::new(),
        samples: Vec::new(),
    }
}

/// Moves to family `name`; refuses to come back to one already left.
fn switch(
    current: &mut Option<String>,
    closed: &mut BTreeSet<String>,
    name: &str,
) -> Result<(), String> {
    if current.as_deref() == Some(name) {
        return Ok(());
    }
    if closed.contains(name) {
        return Err(format!("{name} continues after another family began"));
    }
    if let Some(previous) = current.take() {
        closed.insert(previous);
    }
    *current = Some(name.to_owned());
    Ok(())
}

/// The family a sample name belongs to: itself, or a histogram's or
/// summary's base name.
fn family_of(families: &BTreeMap<String, Family>, sample: &str) -> Option<String> {
    if families.get(sample).is_some_and(|f| !f.kind.is_empty()) {
        return Some(sample.to_owned());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && let Some(f) = families.get(base)
            && (f.kind == "histogram" || (f.kind == "summary" && suffix != "_bucket"))
        {
            return Some(base.to_owned());
        }
    }
    None
}

fn check_sample_in_family(family: &Family, sample: &Sample) -> Result<(), String> {
    match family.kind.as_str() {
        "counter" => {
            if sample.name != family.name {
                return Err(format!(
                    "{} is not a sample of counter {}",
                    sample.name, family.name
                ));
            }
            if sample.value < 0.0 || sample.value.is_nan() {
                return Err("a counter below zero".into());
            }
        }
        "histogram" => {
            let is_bucket = sample.name.ends_with("_bucket");
            if is_bucket != sample.label("le").is_some() {
                return Err("le belongs on _bucket lines, and only there".into());
            }
        }
        "gauge" | "untyped" if sample.name != family.name => {
            return Err(format!(
                "{} is not a sample of {}",
                sample.name, family.name
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Buckets ascending to `+Inf`, cumulative, `+Inf` = `_count`, a `_sum`.
fn check_histogram(family: &Family) -> Result<(), String> {
    let name = &family.name;
    let mut by_series: BTreeMap<Labels, Vec<&Sample>> = BTreeMap::new();
    for s in &family.samples {
        let labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(n, _)| n != "le")
            .cloned()
            .collect();
        by_series.entry(labels).or_default().push(s);
    }
    for (labels, samples) in by_series {
        let buckets: Vec<&&Sample> = samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .collect();
        let (mut last_le, mut last_count) = (f64::NEG_INFINITY, 0.0);
        for b in &buckets {
            let le =
                parse_value(b.label("le").unwrap_or("")).map_err(|e| format!("{name}: le {e}"))?;
            if le <= last_le {
                return Err(format!("{name}{labels:?}: le {le} after {last_le}"));
            }
            if b.value < last_count {
                return Err(format!(
                    "{name}{labels:?}: bucket le={le} holds {} < {last_count}",
                    b.value
                ));
            }
            (last_le, last_count) = (le, b.value);
        }
        if last_le != f64::INFINITY {
            return Err(format!(
                "{name}{labels:?}: the last bucket is not le=\"+Inf\""
            ));
        }
        let find = |suffix: &str| samples.iter().find(|s| s.name == format!("{name}{suffix}"));
        let count = find("_count").ok_or_else(|| format!("{name}{labels:?}: no _count"))?;
        if count.value != last_count {
            return Err(format!(
                "{name}{labels:?}: _count {} is not the +Inf bucket {last_count}",
                count.value
            ));
        }
        find("_sum").ok_or_else(|| format!("{name}{labels:?}: no _sum"))?;
    }
    Ok(())
}

/// `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| "no space before the value".to_string())?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().unwrap_or(""))?;
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp}"))?;
    }
    if parts.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The labels after `{`, and what follows the closing `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or_else(|| "a label without =".to_string())?;
        let name = &s[..eq];
        check_label_name(name)?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name}'s value is not quoted"));
        }
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label {name}")),
                },
                Some((i, '"')) => break eq + 1 + i + 1,
                Some((_, '\n')) | None => return Err(format!("label {name}'s value never ends")),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        s = &s[end..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("labels must be separated by ,".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && !s.is_empty() => {
            s.parse().map_err(|_| format!("bad value {s:?}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

/// A `# HELP` text with its `\\` and `\n` escapes read.
fn unescape_help(help: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => return Err(format!("bad escape {other:?} in # HELP")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}
