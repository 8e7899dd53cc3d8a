//! `mix-examples`: a grid of Mixup and CutMix samples of real image pairs with their soft
//! labels, and for an anchor which of them the mix-supervised contrastive loss counts as
//! positives (as Fig. 4 of the MIMIC paper illustrates).
//!
//! Every cell comes from [`mix_sample`], the training code's own mixing, soft-label and
//! positive rule; a JSON file beside the PNG records each cell's plan, label and decision.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Tensor, TensorData};
use image::{Rgb, RgbImage};
use mimic_core::augment::eval_view;
use mimic_core::backend::{AutodiffBackend, Backend};
use mimic_core::data::{DatasetKind, FerPlusMode, LoadOptions};
use mimic_core::mix::{cutmix_plan, mix_sample, LabelMetric, MixKind, MixPlan};
use mimic_core::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::backend::{dispatch, DeviceKind, Job};
use crate::pipeline;
use crate::plot::{draw_text, fill_rect, stroke_rect, text_width, INK};
use crate::run::{json_f32, json_f32s, write_json};

/// How FERPlus votes become labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VoteMode {
    /// One-hot labels of the majority emotion.
    Majority,
    /// The vote distribution.
    Soft,
}

/// Arguments of `mix-examples`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data set: ferplus, rafdb, affectnet7, affectnet8, fer2013, folder.
    #[arg(long)]
    pub dataset: String,
    /// Data set root.
    #[arg(long)]
    pub data: PathBuf,
    /// The PNG to write; the cells' labels and decisions go to the same name with `.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Split the images come from.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Image pairs (grid rows), each of two different classes.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Mixing weights λ of the first image, comma-separated; each gives a Mixup and a CutMix
    /// column (CutMix's λ is then corrected to the pasted box, as in training).
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.5,0.8")]
    pub lambdas: Vec<f64>,
    /// Positive threshold t on the label distance (inclusive).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// Label distance: linf or l1.
    #[arg(long, default_value = "linf")]
    pub metric: String,
    /// The anchor of each row: the Mixup of its pair at this λ; 1 is the first image itself.
    #[arg(long, default_value_t = 1.0)]
    pub anchor_lambda: f64,
    /// Image side in pixels at which images are mixed (the model's input size).
    #[arg(long, default_value_t = 48)]
    pub size: usize,
    /// Display magnification of each image.
    #[arg(long, default_value_t = 4)]
    pub zoom: u32,
    /// FERPlus labels: majority (one-hot) or soft (vote distributions).
    #[arg(long, value_enum, default_value_t = VoteMode::Majority)]
    pub ferplus_mode: VoteMode,
    /// Seed of the pair choice and of the CutMix boxes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample ids to leave out (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// Renders the grid and its JSON record.
pub fn run(args: Args) -> Result<()> {
    if args.pairs == 0 || args.lambdas.is_empty() || args.workers == 0 {
        bail!("--pairs, --lambdas and --workers need at least one value");
    }
    if let Some(l) = args
        .lambdas
        .iter()
        .chain([&args.anchor_lambda])
        .find(|l| !(0.0..=1.0).contains(*l))
    {
        bail!("mixing weights must lie in [0, 1], got {l}");
    }
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        bail!(
            "--threshold must be a non-negative number, got {}",
            args.threshold
        );
    }
    if !(8..=1024).contains(&args.size) || !(1..=16).contains(&args.zoom) {
        bail!("--size must be in 8..=1024 and --zoom in 1..=16");
    }
    LabelMetric::parse(&args.metric)?;
    dispatch(args.device, args)
}

/// One grid cell.
struct Cell {
    title: String,
    plan: MixPlan,
    /// `[3, size, size]` normalised pixels.
    pixels: Vec<f32>,
    label: Vec<f32>,
    distance: f32,
    positive: bool,
    is_anchor: bool,
}

/// One grid row: a pair, its anchor and its cells.
struct Row {
    first: String,
    second: String,
    labels: [Vec<f32>; 2],
    anchor_plan: MixPlan,
    anchor: Vec<f32>,
    cells: Vec<Cell>,
}

impl Job for Args {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, _backend: &str) -> Result<()> {
        let kind = DatasetKind::parse(&self.dataset)?;
        let metric = LabelMetric::parse(&self.metric)?;
        let options = LoadOptions {
            ferplus_mode: match self.ferplus_mode {
                VoteMode::Majority => FerPlusMode::Majority,
                VoteMode::Soft => FerPlusMode::Soft,
            },
            exclude: self.exclude.clone(),
        };
        let split = pipeline::load(kind, &self.data, &self.split, &options, self.workers)?;
        let samples = &split.split.samples;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let pairs = pick_pairs(&mut rng, &split.labels(), self.pairs).with_context(|| {
            format!(
                "the {} split has too few images of different classes",
                self.split
            )
        })?;

        let size = self.size;
        let tensor = |i: usize| {
            let pixels = eval_view(&split.images[i], size);
            Tensor::<B::InnerBackend, 3>::from_data(
                TensorData::new(pixels, [3, size, size]),
                &device,
            )
        };
        let mut rows = Vec::new();
        for (a, b) in pairs {
            let labels = [samples[a].target.clone(), samples[b].target.clone()];
            let images = [tensor(a), tensor(b)];
            let anchor_plan = mixup(self.anchor_lambda);
            let with_self = self.anchor_lambda < 1.0;

            // The anchor's own label, then every cell against it: all through `mix_sample`.
            let anchor = {
                let l = [labels[0].as_slice(), labels[1].as_slice()];
                let s = mix_sample(images.clone(), l, &anchor_plan, &labels[0], 0.0, metric);
                s.label
            };
            let mut plans: Vec<(String, MixPlan, bool)> = Vec::new();
            if with_self {
                let t = format!("anchor \u{3bb}={:.2}", self.anchor_lambda);
                plans.push((t, anchor_plan, true));
            }
            plans.push(("A".into(), mixup(1.0), !with_self));
            plans.push(("B".into(), mixup(0.0), false));
            for &l in &self.lambdas {
                plans.push((format!("mixup \u{3bb}={l:.2}"), mixup(l), false));
            }
            for &l in &self.lambdas {
                let plan = cutmix_plan(&mut rng, l, size, size);
                plans.push((format!("cutmix \u{3bb}={:.2}", plan.lambda), plan, false));
            }
            let cells = plans
                .into_iter()
                .map(|(title, plan, is_anchor)| {
                    let l = [labels[0].as_slice(), labels[1].as_slice()];
                    let s = mix_sample(images.clone(), l, &plan, &anchor, self.threshold, metric);
                    Cell {
                        title,
                        plan,
                        pixels: pixels_of(s.image),
                        label: s.label,
                        distance: s.distance,
                        positive: s.positive,
                        is_anchor,
                    }
                })
                .collect();
            rows.push(Row {
                first: samples[a].id.clone(),
                second: samples[b].id.clone(),
                labels,
                anchor_plan,
                anchor,
                cells,
            });
        }

        let classes = &split.split.classes;
        let title = format!(
            "{} {}: P = positive of the anchor (label distance {} <= {}), N = negative",
            kind.name(),
            self.split,
            metric_name(metric),
            self.threshold
        );
        let subtitle = if self.anchor_lambda < 1.0 {
            format!(
                "anchor: mixup of A and B at \u{3bb}={:.2}; {LAMBDA_NOTE}",
                self.anchor_lambda
            )
        } else {
            format!("anchor: image A of each row; {LAMBDA_NOTE}")
        };
        if let Some(dir) = self.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        grid_png(
            &rows, classes, &title, &subtitle, size, self.zoom, &self.out,
        )?;
        let json_path = self.out.with_extension("json");
        write_json(&json_path, &record(&self, kind, metric, classes, &rows))?;
        for row in &rows {
            let marks: Vec<String> = row
                .cells
                .iter()
                .map(|c| format!("{} {}", c.title, status(c)))
                .collect();
            println!("{} + {}: {}", row.first, row.second, marks.join(", "));
        }
        println!("wrote {} and {}", self.out.display(), json_path.display());
        Ok(())
    }
}

/// What λ means in the cell titles.
const LAMBDA_NOTE: &str =
    "\u{3bb} = weight of A (cutmix: the share of A left once the box is clipped to the image)";

fn mixup(lambda: f64) -> MixPlan {
    MixPlan {
        kind: MixKind::Mixup,
        lambda,
        cut: None,
    }
}

fn metric_name(metric: LabelMetric) -> &'static str {
    match metric {
        LabelMetric::Linf => "linf",
        LabelMetric::L1 => "l1",
    }
}

fn status(cell: &Cell) -> &'static str {
    match (cell.is_anchor, cell.positive) {
        (true, _) => "anchor",
        (false, true) => "P",
        (false, false) => "N",
    }
}

/// `n` pairs of images of different classes, drawn without repetition in a seeded order.
fn pick_pairs(rng: &mut StdRng, classes: &[usize], n: usize) -> Result<Vec<(usize, usize)>> {
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.shuffle(rng);
    let mut used = vec![false; classes.len()];
    let mut pairs = Vec::new();
    for &a in &order {
        if pairs.len() == n {
            break;
        }
        if used[a] {
            continue;
        }
        let b = order
            .iter()
            .copied()
            .find(|&b| !used[b] && classes[b] != classes[a]);
        if let Some(b) = b {
            used[a] = true;
            used[b] = true;
            pairs.push((a, b));
        }
    }
    if pairs.len() < n {
        bail!("found {} of the {n} pairs asked for", pairs.len());
    }
    Ok(pairs)
}

fn pixels_of<B: Backend>(image: Tensor<B, 3>) -> Vec<f32> {
    image
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float pixels")
}

/// The top entries of a soft label, e.g. `0.50 happiness`, largest first.
fn label_lines(label: &[f32], classes: &[String], max: usize) -> Vec<String> {
    let mut order: Vec<usize> = (0..label.len()).filter(|&c| label[c] >= 0.005).collect();
    order.sort_by(|&a, &b| label[b].total_cmp(&label[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(max)
        .map(|c| format!("{:.2} {}", label[c], classes[c]))
        .collect()
}

/// Cell layout: the image, then a title line, up to three label lines and, after a small
/// gap, the decision line (text scale 2, 16 px per line).
const GAP: u32 = 14;
const LINE: u32 = 16;
const LABEL_LINES: usize = 3;
const VERDICT_GAP: u32 = 5;
const HEAD: u32 = 56;

fn grid_png(
    rows: &[Row],
    classes: &[String],
    title: &str,
    subtitle: &str,
    size: usize,
    zoom: u32,
    path: &Path,
) -> Result<()> {
    let side = size as u32 * zoom;
    let cols = rows.iter().map(|r| r.cells.len()).max().unwrap_or(0) as u32;
    let cell_w = side.max(text_width("cutmix \u{3bb}=0.00", 2)) + GAP;
    let cell_h = side + 8 + (LABEL_LINES as u32 + 2) * LINE + VERDICT_GAP + GAP;
    let w = (GAP + cols * cell_w).max(text_width(title, 2) + 2 * GAP);
    let h = HEAD + rows.len() as u32 * cell_h;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    draw_text(&mut img, title, GAP, 10, 2, INK);
    draw_text(&mut img, subtitle, GAP, 30, 2, Rgb([70, 70, 70]));

    let (green, red) = (Rgb([20, 140, 40]), Rgb([200, 30, 30]));
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.cells.iter().enumerate() {
            let x = GAP + c as u32 * cell_w;
            let y = HEAD + r as u32 * cell_h;
            let color = match (cell.is_anchor, cell.positive) {
                (true, _) => Rgb([40, 40, 40]),
                (false, true) => green,
                (false, false) => red,
            };
            fill_rect(&mut img, x - 4, y - 4, side + 8, side + 8, color);
            blit(&mut img, &cell.pixels, size, zoom, x, y);
            if cell.plan.kind == MixKind::CutMix {
                if let Some(b) = cell.plan.cut {
                    let (bx, by) = (x + b.x0 as u32 * zoom, y + b.y0 as u32 * zoom);
                    let (bw, bh) = ((b.x1 - b.x0) as u32 * zoom, (b.y1 - b.y0) as u32 * zoom);
                    if bw > 2 && bh > 2 {
                        stroke_rect(&mut img, bx, by, bw, bh, 1, Rgb([255, 220, 0]));
                    }
                }
            }

            let mut ty = y + side + 8;
            draw_text(&mut img, &cell.title, x, ty, 2, INK);
            ty += LINE;
            for line in label_lines(&cell.label, classes, LABEL_LINES) {
                draw_text(&mut img, &line, x, ty, 2, Rgb([60, 60, 60]));
                ty += LINE;
            }
            let ty = y + side + 8 + (LABEL_LINES as u32 + 1) * LINE + VERDICT_GAP;
            let verdict = if cell.is_anchor {
                "anchor".to_string()
            } else {
                format!("{}  d={:.2}", status(cell), cell.distance)
            };
            draw_text(&mut img, &verdict, x, ty, 2, color);
        }
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Copies normalised `[3, size, size]` pixels into the image at (x, y), each pixel `zoom`
/// wide.
fn blit(img: &mut RgbImage, pixels: &[f32], size: usize, zoom: u32, x: u32, y: u32) {
    let n = size * size;
    for py in 0..size {
        for px in 0..size {
            let rgb = [0, 1, 2].map(|c| {
                let v = pixels[c * n + py * size + px] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            });
            let (ox, oy) = (x + px as u32 * zoom, y + py as u32 * zoom);
            fill_rect(img, ox, oy, zoom, zoom, Rgb(rgb));
        }
    }
}

fn record(
    args: &Args,
    kind: DatasetKind,
    metric: LabelMetric,
    classes: &[String],
    rows: &[Row],
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let cells: Vec<serde_json::Value> = row
                .cells
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "title": c.title,
                        "plan": c.plan,
                        "label": json_f32s(&c.label),
                        "distance": json_f32(c.distance),
                        "positive": c.positive,
                        "anchor": c.is_anchor,
                    })
                })
                .collect();
            serde_json::json!({
                "first": row.first,
                "second": row.second,
                "labels": [json_f32s(&row.labels[0]), json_f32s(&row.labels[1])],
                "anchor_plan": row.anchor_plan,
                "anchor_label": json_f32s(&row.anchor),
                "cells": cells,
            })
        })
        .collect();
    serde_json::json!({
        "dataset": kind.name(),
        "split": args.split,
        "classes": classes,
        "threshold": json_f32(args.threshold),
        "metric": metric,
        "size": args.size,
        "seed": args.seed,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_have_different_classes_and_no_repeats() {
        // Three of each class: any greedy order finds three mixed pairs.
        let classes = [0, 1, 0, 1, 0, 1];
        let mut rng = StdRng::seed_from_u64(4);
        let pairs = pick_pairs(&mut rng, &classes, 3).unwrap();
        let mut seen: Vec<usize> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        assert!(pairs.iter().all(|&(a, b)| classes[a] != classes[b]));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 6);
        assert!(pick_pairs(&mut rng, &[1, 1, 1], 1).is_err());
    }

    #[test]
    fn label_lines_list_the_largest_weights_first() {
        let classes: Vec<String> = ["neutral", "happiness", "sadness"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            label_lines(&[0.2, 0.8, 0.0], &classes, 3),
            ["0.80 happiness", "0.20 neutral"]
        );
    }
}
