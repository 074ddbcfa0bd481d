//! The chart of a side-by-side run, an SVG drawn with plotters (its SVG
//! backend writes text as `<text>` elements, so no font library is
//! needed): on the left, throughput bars per workload, one colour per
//! system; on the right, W3's latency percentiles on a log scale, solid for
//! publish→deliver and dashed for produce→ack.
//!
//! Missing figures (a skipped or failed run) are left out; the report
//! lists why.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::Case;
use crate::report::{Run, figures};

/// Size of the whole picture in pixels.
const SIZE: (u32, u32) = (1200, 540);

/// The colour of each system, in `targets` order.
fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 3] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
    ];
    PALETTE[index % PALETTE.len()]
}

/// Draws the chart of `runs` into `path`, with `footer` (when and how it
/// was measured) along the bottom.
pub fn draw(path: &Path, targets: &[String], runs: &[Run], footer: &str) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (charts, bottom) = root.split_vertically(SIZE.1 - 24);
    bottom
        .draw_text(
            footer,
            &("sans-serif", 12).into_text_style(&bottom),
            (15, 4),
        )
        .map_err(plot_error)?;
    let (left, right) = charts.split_horizontally(SIZE.0 / 2);
    throughput(&left, targets, runs)?;
    latency(&right, targets, runs)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Grouped bars: msgs/s per workload and system.
fn throughput(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    targets: &[String],
    runs: &[Run],
) -> anyhow::Result<()> {
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| runs.iter().any(|r| r.case == *c))
        .collect();
    let top = runs
        .iter()
        .filter_map(|r| figures(runs, r.case, &r.target))
        .map(|r| r.msgs_per_sec)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput (msgs/s)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..cases.len() as f64 - 0.5, 0f64..top * 1.15)
        .map_err(plot_error)?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            cases
                .get(i as usize)
                .map(|c| c.short().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cases.len().max(1))
        .x_label_formatter(&label)
        .x_label_style(("sans-serif", 11))
        .y_label_formatter(&|y| format!("{:.0}k", y / 1e3))
        .draw()
        .map_err(plot_error)?;
    let width = 0.8 / targets.len().max(1) as f64;
    for (t, target) in targets.iter().enumerate() {
        let fill = colour(t);
        let bars: Vec<(f64, f64)> = cases
            .iter()
            .enumerate()
            .filter_map(|(i, c)| figures(runs, *c, target).map(|r| (i as f64, r.msgs_per_sec)))
            .collect();
        let left_edge = |i: f64| i - 0.4 + t as f64 * width;
        chart
            .draw_series(bars.iter().map(|&(i, rate)| {
                Rectangle::new(
                    [(left_edge(i), 0.0), (left_edge(i) + width * 0.9, rate)],
                    fill.filled(),
                )
            }))
            .map_err(plot_error)?
            .label(target.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// W3 percentiles in µs on a log scale, one pair of lines per system.
fn latency(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    targets: &[String],
    runs: &[Run],
) -> anyhow::Result<()> {
    const POINTS: [&str; 4] = ["p50", "p99", "p99.9", "max"];
    let series: Vec<Percentiles> = targets
        .iter()
        .enumerate()
        .filter_map(|(colour, target)| {
            let r = figures(runs, Case::W3, target)?;
            let ack = match (r.ack_p50_us, r.ack_p99_us, r.ack_p999_us, r.ack_max_us) {
                (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
                _ => None,
            };
            Some(Percentiles {
                colour,
                target,
                deliver: [r.p50_us, r.p99_us, r.p999_us, r.max_us],
                ack,
            })
        })
        .collect();
    let top = series
        .iter()
        .flat_map(|p| p.deliver.iter().chain(p.ack.iter().flatten()))
        .copied()
        .max()
        .unwrap_or(1000)
        .max(10) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "W3 latency at 10,000 msgs/s (µs, log scale)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..3.3f64, (1f64..top * 2.0).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(POINTS.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && (0.0..4.0).contains(&i) {
                POINTS[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(plot_error)?;
    for Percentiles {
        colour: t,
        target,
        deliver,
        ack,
    } in series
    {
        let line = colour(t);
        let points = |values: [u64; 4]| {
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as f64, v.max(1) as f64))
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(LineSeries::new(points(deliver), line.stroke_width(2)))
            .map_err(plot_error)?
            .label(format!("{target} publish→deliver"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], line.stroke_width(2)));
        chart
            .draw_series(
                points(deliver)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, line.filled())),
            )
            .map_err(plot_error)?;
        if let Some(ack) = ack {
            chart
                .draw_series(DashedLineSeries::new(
                    points(ack),
                    6,
                    4,
                    line.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(format!("{target} produce→ack"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 6, y)], line.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// One system's W3 latency points (p50, p99, p99.9, max), in µs.
struct Percentiles<'a> {
    /// Index of its colour (its place in `targets`).
    colour: usize,
    target: &'a str,
    /// publish→deliver.
    deliver: [u64; 4],
    /// produce→ack, where reported.
    ack: Option<[u64; 4]>,
}

/// Plotters' errors borrow the backend's error type; keep their text.
fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("chart: {e:?}")
}
