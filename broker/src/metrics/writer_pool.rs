//! The writer pool's own figures (see [`crate::log::pool`]), read at each
//! scrape: how many workers run, how many logs wait for one, and the
//! commit size that decides whether the pool grows beyond its core.
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `pigeon_writer_threads` | gauge | worker threads running now (the core, plus those started while commits were small) |
//! | `pigeon_writer_threads_max` | gauge | the most it may run (`writer_threads`) |
//! | `pigeon_writer_jobs_waiting` | gauge | partition logs and group journals queued for a worker |
//! | `pigeon_writer_commit_bytes_average` | gauge | moving average of the bytes per commit group (a commit without an `fdatasync` counts as 1 MiB); under 65,536 the pool may grow |

use super::text::{self, Kind};
use crate::log::pool::PoolFigures;

/// Appends the pool's families to `out`.
pub fn render(figures: &PoolFigures, out: &mut String) {
    let families: [(&str, &str, u64); 4] = [
        (
            "pigeon_writer_threads",
            "Writer pool threads running now: the core, plus those started while commits were small.",
            figures.threads as u64,
        ),
        (
            "pigeon_writer_threads_max",
            "The most threads the writer pool may run (writer_threads).",
            figures.most as u64,
        ),
        (
            "pigeon_writer_jobs_waiting",
            "Partition logs and group journals queued for a writer thread now.",
            figures.waiting as u64,
        ),
        (
            "pigeon_writer_commit_bytes_average",
            "Moving average of the bytes per commit group (a commit without an fdatasync counts as 1 MiB); while it is under 65536 and logs wait, the pool starts more threads.",
            figures.commit_bytes_average,
        ),
    ];
    for (name, help, value) in families {
        text::family(out, name, Kind::Gauge, help);
        text::sample(out, name, &[], value as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_figure_as_a_gauge() {
        let mut out = String::new();
        render(
            &PoolFigures {
                threads: 7,
                most: 16,
                waiting: 3,
                commit_bytes_average: 4096,
            },
            &mut out,
        );
        for line in [
            "# TYPE pigeon_writer_threads gauge",
            "pigeon_writer_threads 7",
            "pigeon_writer_threads_max 16",
            "pigeon_writer_jobs_waiting 3",
            "pigeon_writer_commit_bytes_average 4096",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
    }
}
