//! `qatc-plot`: the pictures of a training run, as SVG text (drawn with `plotters`).
//!
//! - [`run_pictures`]: `loss.svg` (training and test loss per epoch), `accuracy.svg` (test
//!   accuracy in percent) and `lr.svg` (the learning rate at each epoch's end, on a log
//!   axis when it spans more than a decade), with every run given overlaid and named in
//!   the legend (a float run and its QAT run, say).
//! - [`site_histogram`]: for one fake-quant site, the histogram of the values it saw
//!   (counts on a log axis), its quantization range as two red lines at the clip points,
//!   the grid's levels as ticks along the bottom (every level up to [`MAX_TICKS`] levels,
//!   every k-th beyond), and in the title the value's name, the bits, scale, zero point and
//!   the share of values outside the range (clipped).
//!
//! The inputs are plain data ([`Run`], [`SitePicture`]), serializable so that a finished
//! run's pictures can be drawn again from its files (`qatc plot`). Pictures are 640 x 360
//! pixels with labelled axes; text is SVG text, so no font files are needed.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw.
    #[error("{0}")]
    Empty(String),
    /// The drawing backend failed.
    #[error("drawing {what}: {message}")]
    Draw {
        /// The picture.
        what: String,
        /// The backend's message.
        message: String,
    },
}

/// The result of drawing.
pub type Result<T> = std::result::Result<T, PlotError>;

/// Width and height of every picture, in pixels.
pub const SIZE: (u32, u32) = (640, 360);

/// Grid levels up to which every level gets a tick.
pub const MAX_TICKS: usize = 64;

/// What one epoch of a run measured (the fields of a metrics JSON line that the pictures
/// use; other fields are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean test loss, if the model has one.
    #[serde(default)]
    pub test_loss: Option<f64>,
    /// Test accuracy in [0, 1].
    pub test_accuracy: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
}

/// A run: its name in legends and its epochs.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The legend's name (e.g. `float`, `qat tflite-int8`, a directory name).
    pub label: String,
    /// Epochs in order.
    pub epochs: Vec<Epoch>,
}

impl Run {
    /// Reads a metrics file of JSON lines (one [`Epoch`] per line; blank lines skipped).
    /// Errors name the line.
    pub fn from_json_lines(label: &str, text: &str) -> std::result::Result<Run, String> {
        let mut epochs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: Epoch = serde_json::from_str(line)
                .map_err(|e| format!("line {}: not a metrics record: {e}", i + 1))?;
            epochs.push(e);
        }
        Ok(Run {
            label: label.to_string(),
            epochs,
        })
    }
}

/// A line chart's curve.
struct Curve {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    /// The run's color (curves of one run share it; the test curve is dashed).
    color: usize,
}

/// The colors of successive runs.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn draw_err(what: &str, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// `[lo, hi]` widened so that a flat or single-point series still gets an axis.
fn padded(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        let (lo, hi) = (lo.max(f64::MIN_POSITIVE), hi.max(f64::MIN_POSITIVE));
        return (lo / 1.5, hi * 1.5);
    }
    if hi - lo < 1e-12 {
        let d = lo.abs().max(1.0) * 0.05;
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * 0.05;
    (lo - d, hi + d)
}

/// A line chart of `curves` (x: epoch). `log_y`: the y axis is logarithmic.
fn line_chart(
    what: &str,
    title: &str,
    y_desc: &str,
    curves: &[Curve],
    log_y: bool,
) -> Result<String> {
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() && (!log_y || y > 0.0) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return Err(PlotError::Empty(format!(
            "{what}: no finite values to draw"
        )));
    }
    let (x0, x1) = if x1 - x0 < 1.0 {
        (x0 - 0.5, x1 + 0.5)
    } else {
        (x0, x1)
    };
    let (y0, y1) = padded(y0, y1, log_y);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(what, e))?;
        let mut b = ChartBuilder::on(&root);
        b.caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("epoch")
                    .y_desc(y_desc)
                    .x_labels(curves_epochs(curves).min(12))
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .light_line_style(BLACK.mix(0.05))
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(|e| draw_err(what, e))?;
                for (i, c) in curves.iter().enumerate() {
                    let _ = i;
                    let color = COLORS[c.color % COLORS.len()];
                    let style = ShapeStyle::from(&color).stroke_width(2);
                    let pts: Vec<(f64, f64)> = c
                        .points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                        .collect();
                    let series = if c.dashed {
                        chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                    } else {
                        chart.draw_series(LineSeries::new(pts.clone(), style))
                    }
                    .map_err(|e| draw_err(what, e))?;
                    let dashed = c.dashed;
                    series.label(c.label.clone()).legend(move |(x, y)| {
                        if dashed {
                            PathElement::new(vec![(x, y), (x + 8, y)], style)
                        } else {
                            PathElement::new(vec![(x, y), (x + 18, y)], style)
                        }
                    });
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| draw_err(what, e))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(|e| draw_err(what, e))?;
            }};
        }
        if log_y {
            draw!(
                b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                    .map_err(|e| draw_err(what, e))?
            );
        } else {
            draw!(
                b.build_cartesian_2d(x0..x1, y0..y1)
                    .map_err(|e| draw_err(what, e))?
            );
        }
        root.present().map_err(|e| draw_err(what, e))?;
    }
    Ok(svg)
}

fn curves_epochs(curves: &[Curve]) -> usize {
    curves
        .iter()
        .map(|c| c.points.len())
        .max()
        .unwrap_or(1)
        .max(2)
}

/// The three pictures of `runs`, overlaid: `[("loss.svg", svg), ("accuracy.svg", svg),
/// ("lr.svg", svg)]`. Runs without epochs are left out; an error if none has any.
pub fn run_pictures(runs: &[Run]) -> Result<Vec<(&'static str, String)>> {
    let runs: Vec<&Run> = runs.iter().filter(|r| !r.epochs.is_empty()).collect();
    if runs.is_empty() {
        return Err(PlotError::Empty(
            "no epochs to draw (the metrics hold no complete epoch yet)".into(),
        ));
    }
    let several = runs.len() > 1;
    let name = |r: &Run, what: &str| {
        if several {
            format!("{}: {what}", r.label)
        } else {
            what.to_string()
        }
    };
    let series = |r: &Run, f: &dyn Fn(&Epoch) -> Option<f64>| -> Vec<(f64, f64)> {
        r.epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let mut loss = Vec::new();
    let mut acc = Vec::new();
    let mut lr = Vec::new();
    for (color, r) in runs.iter().enumerate() {
        loss.push(Curve {
            label: name(r, "train loss"),
            points: series(r, &|e| Some(e.train_loss)),
            dashed: false,
            color,
        });
        let test = series(r, &|e| e.test_loss);
        if !test.is_empty() {
            loss.push(Curve {
                label: name(r, "test loss"),
                points: test,
                dashed: true,
                color,
            });
        }
        acc.push(Curve {
            label: name(r, "test accuracy"),
            points: series(r, &|e| Some(e.test_accuracy * 100.0)),
            dashed: false,
            color,
        });
        lr.push(Curve {
            label: name(r, "learning rate"),
            points: series(r, &|e| Some(e.lr)),
            dashed: false,
            color,
        });
    }
    let title = if several {
        runs.iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    } else {
        runs[0].label.clone()
    };
    let lrs: Vec<f64> = lr
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = lrs
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let log_lr = !lrs.is_empty() && hi / lo > 10.0;
    // the loss on a log axis when it falls by more than a decade (early epochs otherwise
    // flatten the rest)
    let losses: Vec<f64> = loss
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .collect();
    let (llo, lhi) = losses
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let log_loss = !losses.is_empty() && lhi / llo > 10.0;
    Ok(vec![
        (
            "loss.svg",
            line_chart(
                "loss.svg",
                &format!("loss per epoch — {title}"),
                "mean cross-entropy loss",
                &loss,
                log_loss,
            )?,
        ),
        (
            "accuracy.svg",
            line_chart(
                "accuracy.svg",
                &format!("test accuracy — {title}"),
                "test accuracy (%)",
                &acc,
                false,
            )?,
        ),
        (
            "lr.svg",
            line_chart(
                "lr.svg",
                &format!("learning rate — {title}"),
                "learning rate (at the epoch's end)",
                &lr,
                log_lr,
            )?,
        ),
    ])
}

/// The quantization grid of a per-tensor site: value `scale * (q - zero_point)` for
/// `q` in `[qmin, qmax]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// The step between levels.
    pub scale: f64,
    /// The integer that stands for 0.
    pub zero_point: i64,
    /// The lowest integer.
    pub qmin: i64,
    /// The highest integer.
    pub qmax: i64,
}

impl Grid {
    /// The number of levels.
    pub fn levels(&self) -> usize {
        (self.qmax - self.qmin + 1).max(0) as usize
    }
    /// Bits of the grid (`ceil(log2(levels))`).
    pub fn bits(&self) -> u32 {
        (self.levels().max(2) as f64).log2().ceil() as u32
    }
    /// The real value of level `q`.
    pub fn value(&self, q: i64) -> f64 {
        self.scale * (q - self.zero_point) as f64
    }
}

/// What one fake-quant site saw, as [`site_histogram`] draws it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SitePicture {
    /// The quantized value's name (`%fc1.w`).
    pub name: String,
    /// The histogram's range: the lower end of the first bin.
    pub lo: f64,
    /// The upper end of the last bin.
    pub hi: f64,
    /// Values per equal-width bin.
    pub counts: Vec<u64>,
    /// The quantization range: the clip points (per-channel sites: the widest channel's
    /// ends).
    pub range: (f64, f64),
    /// Channels with their own range (1: per tensor).
    pub channels: usize,
    /// The grid, for a per-tensor site whose quantization parameters are known.
    pub grid: Option<Grid>,
    /// Bits of the site's integer range (also for per-channel sites).
    pub bits: Option<u32>,
    /// Values outside their channel's range.
    pub clipped: u64,
    /// Values seen.
    pub total: u64,
}

/// A number in at most 4 significant digits.
fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.3e}");
    }
    let digits = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The title of a site's picture: `%fc1.w — 8-bit, scale 0.0123, zero point 0 — 0.12%
/// clipped` (per-channel: `8-bit per channel (32 channels)`).
pub fn site_title(s: &SitePicture) -> String {
    let share = if s.total == 0 {
        0.0
    } else {
        s.clipped as f64 / s.total as f64 * 100.0
    };
    let bits = s.bits.map(|b| format!("{b}-bit")).unwrap_or_default();
    let how = match &s.grid {
        Some(g) if s.channels <= 1 => format!(
            "{bits}, scale {}, zero point {}",
            short(g.scale),
            g.zero_point
        ),
        _ if s.channels > 1 => format!("{bits} per channel ({} channels)", s.channels),
        _ => bits,
    };
    format!("{} — {how} — {share:.2}% clipped", s.name)
}

/// The histogram picture of one site (see the module doc).
pub fn site_histogram(s: &SitePicture) -> Result<String> {
    let what = format!("the histogram of {}", s.name);
    if s.counts.is_empty() || s.total == 0 {
        return Err(PlotError::Empty(format!("{what}: no values were seen")));
    }
    let (r0, r1) = s.range;
    let lo = s.lo.min(r0);
    let hi = s.hi.max(r1);
    let (x0, x1) = padded(lo, hi, false);
    let max = *s.counts.iter().max().unwrap_or(&1) as f64;
    let (y0, y1) = (0.5, max.max(1.0) * 2.0);
    let width = (s.hi - s.lo) / s.counts.len() as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&what, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(site_title(s), ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(|e| draw_err(&what, e))?;
        chart
            .configure_mesh()
            .x_desc(format!("value of {}", s.name))
            .y_desc("count (log scale)")
            .light_line_style(BLACK.mix(0.05))
            .label_style(("sans-serif", 13))
            .x_label_formatter(&|x| short(if x.abs() < (x1 - x0) * 1e-9 { 0.0 } else { *x }))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    short(*y)
                }
            })
            .draw()
            .map_err(|e| draw_err(&what, e))?;
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(
                s.counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, &c)| {
                        let a = s.lo + i as f64 * width;
                        Rectangle::new([(a, y0), (a + width, c as f64)], blue.mix(0.75).filled())
                    }),
            )
            .map_err(|e| draw_err(&what, e))?
            .label("values seen")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], blue.filled()));
        // the grid's levels: ticks along the bottom
        if let Some(g) = &s.grid {
            let levels = g.levels();
            let every = levels.div_ceil(MAX_TICKS).max(1);
            let tick_top = y0 * (y1 / y0).powf(0.06);
            let gray = BLACK.mix(0.55);
            chart
                .draw_series(
                    (g.qmin..=g.qmax)
                        .step_by(every)
                        .map(|q| g.value(q))
                        .filter(|v| *v >= x0 && *v <= x1)
                        .map(|v| PathElement::new(vec![(v, y0), (v, tick_top)], gray)),
                )
                .map_err(|e| draw_err(&what, e))?
                .label(if every == 1 {
                    format!("grid: all {levels} levels")
                } else {
                    format!("grid: every {every}th of {levels} levels")
                })
                .legend(move |(x, y)| PathElement::new(vec![(x + 7, y - 6), (x + 7, y + 6)], gray));
        }
        // the clip points
        let red = RGBColor(214, 39, 40);
        let style = ShapeStyle::from(&red).stroke_width(2);
        chart
            .draw_series([r0, r1].map(|v| PathElement::new(vec![(v, y0), (v, y1)], style)))
            .map_err(|e| draw_err(&what, e))?
            .label(format!("range [{}, {}]", short(r0), short(r1)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| draw_err(&what, e))?;
        root.present().map_err(|e| draw_err(&what, e))?;
    }
    Ok(svg)
}

/// A file name for a site's picture: the value's name without `%`, characters other than
/// letters, digits, `.`, `_` and `-` replaced by `_`, then `.svg`.
pub fn site_file_name(name: &str) -> String {
    let base: String = name
        .trim_start_matches('%')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}.svg")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(n: usize, lr: impl Fn(usize) -> f64) -> Vec<Epoch> {
        (1..=n)
            .map(|e| Epoch {
                epoch: e,
                train_loss: 2.0 / e as f64,
                test_loss: Some(2.2 / e as f64),
                test_accuracy: 0.5 + 0.04 * e as f64,
                lr: lr(e),
            })
            .collect()
    }

    #[test]
    fn curves_carry_every_epoch_and_label() {
        let runs = [
            Run {
                label: "float".into(),
                epochs: epochs(5, |_| 0.1),
            },
            Run {
                label: "qat tflite-int8".into(),
                epochs: epochs(5, |e| 0.1 * 0.5f64.powi(e as i32)),
            },
        ];
        let pics = run_pictures(&runs).unwrap();
        if let Ok(dir) = std::env::var("QATC_PLOT_DUMP") {
            for (n, svg) in &pics {
                std::fs::write(format!("{dir}/{n}"), svg).unwrap();
            }
        }
        let names: Vec<&str> = pics.iter().map(|p| p.0).collect();
        assert_eq!(names, ["loss.svg", "accuracy.svg", "lr.svg"]);
        let loss = &pics[0].1;
        assert!(loss.starts_with("<svg"), "{}", &loss[..80]);
        for label in [
            "float: train loss",
            "float: test loss",
            "qat tflite-int8: train loss",
            "epoch",
            "mean cross-entropy loss",
        ] {
            assert!(loss.contains(label), "loss.svg lacks {label}");
        }
        // one marker per epoch and curve: 2 runs x (train, test) x 5 epochs
        assert_eq!(loss.matches("<circle").count(), 20);
        let acc = &pics[1].1;
        assert!(acc.contains("test accuracy (%)"));
        assert_eq!(acc.matches("<circle").count(), 10);
    }

    #[test]
    fn the_title_reports_the_grid_and_the_clipped_share() {
        let s = SitePicture {
            name: "%fc1".into(),
            lo: -1.0,
            hi: 3.0,
            counts: vec![5, 10, 70, 15],
            range: (0.0, 2.0),
            channels: 1,
            grid: Some(Grid {
                scale: 2.0 / 255.0,
                zero_point: -128,
                qmin: -128,
                qmax: 127,
            }),
            bits: Some(8),
            clipped: 20,
            total: 100,
        };
        assert_eq!(
            site_title(&s),
            "%fc1 — 8-bit, scale 0.007843, zero point -128 — 20.00% clipped"
        );
        let svg = site_histogram(&s).unwrap();
        if let Ok(dir) = std::env::var("QATC_PLOT_DUMP") {
            std::fs::write(format!("{dir}/site.svg"), &svg).unwrap();
        }
        assert!(svg.contains("value of %fc1"));
        assert!(svg.contains("range [0, 2]"));
        assert!(svg.contains("grid: every 4th of 256 levels"));
        // one bar per non-empty bin, as tall as its count on the log axis: the tallest is
        // the bin of 70
        let bars: Vec<&str> = svg
            .split("<rect")
            .filter(|r| r.contains("opacity=\"0.75\""))
            .collect();
        assert_eq!(bars.len(), 4);
        let height = |r: &str| -> f64 {
            let h = r.split("height=\"").nth(1).unwrap();
            h[..h.find('"').unwrap()].parse().unwrap()
        };
        let heights: Vec<f64> = bars.iter().map(|r| height(r)).collect();
        let tallest = heights.iter().cloned().fold(0.0, f64::max);
        assert_eq!(heights[2], tallest, "{heights:?}");
        assert!(
            heights[0] < heights[1] && heights[1] < heights[3],
            "{heights:?}"
        );
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(site_file_name("%fc1.w"), "fc1.w.svg");
        assert_eq!(site_file_name("%a/b c"), "a_b_c.svg");
    }
}
