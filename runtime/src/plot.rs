//! Pictures of a run, drawn as SVG with plotters: `curves.svg` (the loss and each metric
//! per epoch, training and test) and `confusion.svg` (the test confusion matrix of a
//! classifier).
//!
//! Invariant: drawing never panics on the numbers it gets; NaN and infinite values are
//! left out of the curves, and an empty history draws empty axes.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor;

use crate::metrics::{ConfusionMatrix, Metric};
use crate::train::EpochRecord;

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const TEST_COLOR: RGBColor = RGBColor(214, 39, 40);
const VAL_COLOR: RGBColor = RGBColor(44, 160, 44);

type Series = Vec<(f64, f64)>;

/// One panel: its title and the training, test and validation series (the last empty
/// without a validation split).
struct Panel {
    title: String,
    train: Series,
    test: Series,
    val: Series,
}

fn finite_points(history: &[EpochRecord], value: impl Fn(&EpochRecord) -> Option<f64>) -> Series {
    history
        .iter()
        .filter_map(|r| {
            value(r)
                .filter(|v| v.is_finite())
                .map(|v| (r.epoch as f64, v))
        })
        .collect()
}

/// Draws the loss and every metric per epoch, training, test and (when there is one)
/// validation, one panel each.
pub fn write_curves(
    path: &Path,
    history: &[EpochRecord],
    metrics: &[Metric],
) -> Result<(), String> {
    let mut panels = vec![Panel {
        title: "loss".into(),
        train: finite_points(history, |r| Some(r.train_loss)),
        test: finite_points(history, |r| Some(r.test_loss)),
        val: finite_points(history, |r| r.val_loss),
    }];
    for &m in metrics {
        panels.push(Panel {
            title: m.name().into(),
            train: finite_points(history, |r| r.train_metric(m)),
            test: finite_points(history, |r| r.test_metric(m)),
            val: finite_points(history, |r| r.monitored(&format!("val_{m}"))),
        });
    }
    let cols = panels.len().min(2);
    let rows = panels.len().div_ceil(cols);
    let size = (520 * cols as u32, 340 * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((rows, cols));
    let last_epoch = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    for (i, (panel, area)) in panels.iter().zip(areas.iter()).enumerate() {
        // The loss falls and the metrics mostly rise: keep the legend out of their way.
        let legend = if i == 0 {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        };
        draw_panel(area, panel, last_epoch, legend).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    last_epoch: f64,
    legend: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let values = panel
        .train
        .iter()
        .chain(&panel.test)
        .chain(&panel.val)
        .map(|p| p.1);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1.0) * 0.05
    };
    let (x0, x1) = if last_epoch > 1.0 {
        (1.0, last_epoch)
    } else {
        (0.5, 1.5)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((last_epoch as usize).clamp(2, 10))
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .draw()?;
    for (series, color, label) in [
        (&panel.train, TRAIN_COLOR, "train"),
        (&panel.test, TEST_COLOR, "test"),
        (&panel.val, VAL_COLOR, "validation"),
    ] {
        if series.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(series.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(legend)
        .draw()
}

/// Draws the confusion matrix: true classes as rows, predicted classes as columns, each
/// cell shaded by its share of its row and labelled with its count.
pub fn write_confusion(path: &Path, cm: &ConfusionMatrix) -> Result<(), String> {
    let k = cm.classes();
    let cell = (560 / k.max(1)).clamp(24, 64) as i32;
    let (left, top) = (90, 70);
    let side = cell * k as i32;
    let size = ((left + side + 30) as u32, (top + side + 24) as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let draw = || -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        root.fill(&WHITE)?;
        let centered = |size: i32| {
            ("sans-serif", size)
                .into_font()
                .color(&BLACK)
                .pos(text_anchor::Pos::new(
                    text_anchor::HPos::Center,
                    text_anchor::VPos::Center,
                ))
        };
        root.draw(&Text::new(
            "confusion matrix (test)",
            (left + side / 2, 20),
            centered(20),
        ))?;
        root.draw(&Text::new(
            "predicted class",
            (left + side / 2, top - 30),
            centered(15),
        ))?;
        root.draw(&Text::new(
            "true class",
            (24, top + side / 2),
            centered(15).transform(FontTransform::Rotate270),
        ))?;
        for t in 0..k {
            let row_total: u64 = (0..k).map(|p| cm.get(t, p)).sum();
            for p in 0..k {
                let count = cm.get(t, p);
                let share = if row_total == 0 {
                    0.0
                } else {
                    count as f64 / row_total as f64
                };
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                let shade = |full: u8| (255.0 - share * (255.0 - f64::from(full))) as u8;
                let fill = RGBColor(shade(8), shade(48), shade(107));
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    BLACK.mix(0.2),
                ))?;
                let text_color = if share > 0.5 { WHITE } else { BLACK };
                let font = ("sans-serif", (cell / 3).clamp(9, 16))
                    .into_font()
                    .color(&text_color)
                    .pos(text_anchor::Pos::new(
                        text_anchor::HPos::Center,
                        text_anchor::VPos::Center,
                    ));
                root.draw(&Text::new(
                    count.to_string(),
                    (x + cell / 2, y + cell / 2),
                    font,
                ))?;
            }
            root.draw(&Text::new(
                t.to_string(),
                (left - 14, top + t as i32 * cell + cell / 2),
                centered(13),
            ))?;
        }
        for p in 0..k {
            root.draw(&Text::new(
                p.to_string(),
                (left + p as i32 * cell + cell / 2, top - 10),
                centered(13),
            ))?;
        }
        root.present()
    };
    draw().map_err(|e| e.to_string())
}
