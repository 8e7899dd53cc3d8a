//! `plot`: the training curves of a run directory as one PNG: the losses, the validation
//! accuracy (fine-tuning) or held-out loss (pre-training), and the learning rate, each
//! against the step, read from the run's `metrics.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};

use crate::plot::{
    draw_line, draw_text, fill_disc, fill_rect, padded_range, text_width, Frame, INK, PALETTE,
};

/// Arguments of `plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory of `finetune` or `pretrain` (or its `metrics.jsonl` itself).
    pub run: PathBuf,
    /// The PNG to write. Default: `curves.png` in the run directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Draws the curves.
pub fn run(args: Args) -> Result<()> {
    let (file, dir) = if args.run.is_dir() {
        (args.run.join("metrics.jsonl"), args.run.clone())
    } else {
        let dir = args.run.parent().map(PathBuf::from).unwrap_or_default();
        (args.run.clone(), dir)
    };
    let metrics = Metrics::read(&file)?;
    let panels = metrics.panels();
    if panels.is_empty() {
        bail!(
            "{}: no loss, learning-rate or validation values to plot",
            file.display()
        );
    }
    let out = args.out.unwrap_or_else(|| dir.join("curves.png"));
    let name = dir
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let header = format!(
        "{name}: {} run, {} steps, {} epochs",
        metrics.kind(),
        metrics.last_step(),
        metrics.epochs.len()
    );
    curves_png(&panels, &header, &out)?;
    println!("{header}; curves written to {}", out.display());
    Ok(())
}

/// A line of `metrics.jsonl`: its step and its numeric values.
struct Line {
    step: f64,
    values: serde_json::Map<String, serde_json::Value>,
}

impl Line {
    fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(serde_json::Value::as_f64)
    }
}

/// The lines of a run, split into per-step lines and end-of-epoch lines.
struct Metrics {
    steps: Vec<Line>,
    epochs: Vec<Line>,
}

impl Metrics {
    /// Reads and checks `metrics.jsonl`: every non-blank line must be a JSON object with a
    /// numeric `step`.
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut metrics = Metrics {
            steps: Vec::new(),
            epochs: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let value: serde_json::Value =
                serde_json::from_str(raw).with_context(|| format!("{}: not valid JSON", at()))?;
            let serde_json::Value::Object(values) = value else {
                bail!("{}: expected a JSON object, got {raw:.60}", at());
            };
            let Some(step) = values.get("step").and_then(serde_json::Value::as_f64) else {
                bail!("{}: no numeric \"step\" in {raw:.60}", at());
            };
            // End-of-epoch lines carry the epoch means and the validation values.
            let epoch = values
                .keys()
                .any(|k| k == "train_loss" || k.starts_with("val_"));
            let line = Line { step, values };
            if epoch {
                metrics.epochs.push(line);
            } else {
                metrics.steps.push(line);
            }
        }
        if metrics.steps.is_empty() && metrics.epochs.is_empty() {
            bail!(
                "{} is empty: the run has not logged any metrics yet",
                path.display()
            );
        }
        Ok(metrics)
    }

    fn kind(&self) -> &'static str {
        let has = |k: &str| self.epochs.iter().any(|l| l.get(k).is_some());
        let step_has = |k: &str| self.steps.iter().any(|l| l.values.contains_key(k));
        if has("val_accuracy") || step_has("ce") {
            "fine-tuning"
        } else if has("val_loss") {
            "pre-training"
        } else {
            "training"
        }
    }

    fn last_step(&self) -> f64 {
        self.steps
            .iter()
            .chain(&self.epochs)
            .map(|l| l.step)
            .fold(0.0, f64::max)
    }

    /// A series of `key` from step lines (`epochs` false) or epoch lines, scaled by `scale`.
    fn series(&self, key: &str, epochs: bool, scale: f64) -> Vec<(f64, f64)> {
        let lines = if epochs { &self.epochs } else { &self.steps };
        lines
            .iter()
            .filter_map(|l| l.get(key).map(|v| (l.step, v * scale)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }

    /// The panels that have data: losses, validation, learning rate.
    fn panels(&self) -> Vec<Chart> {
        let mut panels = Vec::new();
        let named = |name: &str, points: Vec<(f64, f64)>, color: usize, dots: bool| Curve {
            name: name.to_string(),
            points,
            color: PALETTE[color],
            dots,
        };
        let losses = vec![
            named("loss", self.series("loss", false, 1.0), 0, false),
            named("ce", self.series("ce", false, 1.0), 1, false),
            named(
                "contrastive",
                self.series("contrastive", false, 1.0),
                2,
                false,
            ),
            named("epoch mean", self.series("train_loss", true, 1.0), 3, true),
        ];
        panels.push(Chart::new("training loss", "loss", losses));
        let accuracy = vec![
            named("val acc", self.series("val_accuracy", true, 100.0), 0, true),
            named(
                "val mean class acc",
                self.series("val_mean_class_accuracy", true, 100.0),
                1,
                true,
            ),
        ];
        panels.push(Chart::new("validation accuracy", "accuracy %", accuracy));
        let held_out = vec![named(
            "held-out loss",
            self.series("val_loss", true, 1.0),
            4,
            true,
        )];
        panels.push(Chart::new("held-out loss", "loss", held_out));
        let lr = vec![named("lr", self.series("lr", false, 1.0), 5, false)];
        panels.push(Chart::new("learning rate", "lr", lr));
        panels.retain(|p| !p.curves.is_empty());
        panels
    }
}

/// One named curve.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
    color: Rgb<u8>,
    /// Epoch values: a dot per point (there are few).
    dots: bool,
}

/// One panel of curves against the step.
struct Chart {
    title: String,
    y_label: String,
    curves: Vec<Curve>,
}

impl Chart {
    fn new(title: &str, y_label: &str, curves: Vec<Curve>) -> Self {
        Self {
            title: title.into(),
            y_label: y_label.into(),
            curves: curves
                .into_iter()
                .filter(|c| !c.points.is_empty())
                .collect(),
        }
    }
}

/// Layout: a header line, then the panels side by side, each a title, a plot area of
/// `PLOT_W x PLOT_H` with ticks and axis labels, and a legend row below.
const HEADER: u32 = 34;
const LEFT: u32 = 86;
const RIGHT: u32 = 24;
const TITLE: u32 = 30;
const PLOT_W: u32 = 400;
const PLOT_H: u32 = 280;
const AXIS: u32 = 48;
const LEGEND_LINE: u32 = 20;

fn curves_png(panels: &[Chart], header: &str, path: &Path) -> Result<()> {
    let panel_w = LEFT + PLOT_W + RIGHT;
    let legend_rows = 2;
    let h = HEADER + TITLE + PLOT_H + AXIS + legend_rows * LEGEND_LINE + 10;
    let w = (panels.len() as u32 * panel_w).max(text_width(header, 2) + 32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    draw_text(&mut img, header, 16, 10, 2, INK);

    for (k, chart) in panels.iter().enumerate() {
        let x0 = k as u32 * panel_w;
        let title_x = x0 + LEFT + (PLOT_W.saturating_sub(text_width(&chart.title, 2))) / 2;
        draw_text(&mut img, &chart.title, title_x, HEADER + 6, 2, INK);
        let all = || chart.curves.iter().flat_map(|c| c.points.iter());
        let frame = Frame {
            x: x0 + LEFT,
            y: HEADER + TITLE,
            w: PLOT_W,
            h: PLOT_H,
            x_range: padded_range(all().map(|p| p.0)),
            y_range: padded_range(all().map(|p| p.1)),
        };
        frame.draw_axes(&mut img, "step", &chart.y_label);
        for curve in &chart.curves {
            let pixels: Vec<(f64, f64)> = curve
                .points
                .iter()
                .map(|&(x, y)| frame.pixel(x, y))
                .collect();
            if curve.dots || pixels.len() == 1 {
                for w in pixels.windows(2) {
                    draw_line(&mut img, w[0], w[1], 1.0, curve.color);
                }
                for &(px, py) in &pixels {
                    fill_disc(&mut img, px, py, 3.5, curve.color);
                }
            } else {
                for w in pixels.windows(2) {
                    draw_line(&mut img, w[0], w[1], 1.5, curve.color);
                }
            }
        }

        // Legend below the axis label, wrapping to a second row.
        let (mut lx, mut ly) = (x0 + LEFT, HEADER + TITLE + PLOT_H + AXIS);
        for curve in &chart.curves {
            let width = 22 + text_width(&curve.name, 2) + 16;
            if lx + width > x0 + panel_w && lx > x0 + LEFT {
                lx = x0 + LEFT;
                ly += LEGEND_LINE;
            }
            fill_rect(&mut img, lx, ly + 3, 16, 8, curve.color);
            draw_text(&mut img, &curve.name, lx + 22, ly, 2, INK);
            lx += width;
        }
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn finetune_lines_give_loss_accuracy_and_lr_panels() {
        let (_dir, path) = metrics_file(
            "{\"step\":1,\"epoch\":0,\"loss\":2.5,\"ce\":2.0,\"contrastive\":4.8,\"lr\":0.001}\n\
             {\"step\":2,\"epoch\":0,\"loss\":2.4,\"ce\":1.9,\"contrastive\":null,\"lr\":0.002}\n\
             {\"epoch\":0,\"step\":2,\"train_loss\":2.45,\"val_accuracy\":0.3,\
             \"val_mean_class_accuracy\":0.2}\n",
        );
        let m = Metrics::read(&path).unwrap();
        assert_eq!(
            (m.steps.len(), m.epochs.len(), m.kind()),
            (2, 1, "fine-tuning")
        );
        let panels = m.panels();
        let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            ["training loss", "validation accuracy", "learning rate"]
        );
        // A null contrastive value is skipped, accuracies are in per cent.
        assert_eq!(panels[0].curves[2].points, [(1.0, 4.8)]);
        assert_eq!(panels[1].curves[0].points, [(2.0, 30.0)]);
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let (_dir, path) = metrics_file("{\"step\":1,\"loss\":1}\n\n{\"step\": oops}\n");
        let err = format!("{:#}", Metrics::read(&path).err().unwrap());
        assert!(err.contains("metrics.jsonl:3: not valid JSON"), "{err}");
        let (_dir, path) = metrics_file("{\"loss\":1}\n");
        let err = Metrics::read(&path).err().unwrap().to_string();
        assert!(
            err.contains("metrics.jsonl:1: no numeric \"step\""),
            "{err}"
        );
        let (_dir, path) = metrics_file("\n");
        let err = Metrics::read(&path).err().unwrap().to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
