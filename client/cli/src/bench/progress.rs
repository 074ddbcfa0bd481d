//! [`Progress`]: the live bar on stderr while a run is timed.
//!
//! The harness's tasks only bump an atomic counter; a ticker task copies
//! it to an `indicatif` bar ten times a second, so the bar costs the
//! measured path one relaxed atomic add per message and nothing else. The
//! bar is hidden unless asked for *and* stderr is a terminal (so `--json`,
//! pipes and tests never see escape codes).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use super::payload::Epoch;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(100);

/// A progress bar fed from a counter.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

/// What the bar counts towards.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// This many messages.
    Messages(u64),
    /// This long a run.
    Duration(Duration),
}

impl Progress {
    /// A bar labelled `label` showing `counter` towards `goal`; drawn only
    /// when `enabled` and stderr is a terminal.
    pub fn start(
        enabled: bool,
        label: &str,
        goal: Goal,
        counter: Arc<AtomicU64>,
        epoch: Epoch,
    ) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let (length, template) = match goal {
            Goal::Messages(n) => (
                n,
                "{prefix} [{bar:40}] {pos}/{len} msgs, {per_sec}, eta {eta}",
            ),
            Goal::Duration(d) => (
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                "{prefix} [{bar:40}] {elapsed}/{duration} {msg}",
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        let shown = bar.clone();
        let started = epoch.ns();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let count = counter.load(Ordering::Relaxed);
                match goal {
                    Goal::Messages(_) => shown.set_position(count),
                    Goal::Duration(_) => {
                        shown.set_position((epoch.ns() - started) / 1_000_000);
                        shown.set_message(format!("{count} msgs"));
                    }
                }
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    /// Removes the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
