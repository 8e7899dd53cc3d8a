//! `embed`: the pooled encoder features of a split's images, their seeded 2-D t-SNE map and
//! how well the map separates the classes, for one checkpoint or several side by side.
//!
//! Writes into `--out`: `embeddings.csv` (`embeddings-<name>.csv` per checkpoint with
//! `--compare`; columns `id,label,f0,f1,...`), `tsne.json` (points with x, y, class and
//! image id per checkpoint, the class names, the settings and the scores) and `tsne.png`.
//! With `--web`, also the page's compact copies: `tsne-features.bin` (unit-length features as
//! int8) and `tsne-thumbs.png` (a sprite of the images), both in the order of the points.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Tensor, TensorData};
use image::{GrayImage, Luma, Rgb, RgbImage};
use mimic_core::augment::eval_view;
use mimic_core::backend::{AutodiffBackend, Backend};
use mimic_core::data::{DatasetKind, DecodedImage, FerPlusMode, LoadOptions};
use mimic_core::model::Vit;
use mimic_core::weights::write_atomic;

use crate::backend::{dispatch, DeviceKind, Job};
use crate::pipeline;
use crate::plot::{draw_legend, draw_text, fill_disc, stroke_rect, INK, PALETTE};
use crate::run::{json_f32, load_encoder, write_json};
use crate::tsne::{check_finite, tsne_2d, Separation, TsneSettings};

/// Neighbours of the kNN separation score.
const KNN_K: usize = 5;
/// Side of a thumbnail in the page's sprite, in pixels (FERPlus's own size).
const THUMB_SIDE: u32 = 48;
/// Thumbnails per row of the page's sprite.
const THUMB_COLUMNS: u32 = 32;
/// The features file the page reads.
const WEB_FEATURES: &str = "tsne-features.bin";
/// The thumbnail sprite the page reads.
const WEB_SPRITE: &str = "tsne-thumbs.png";

/// Arguments of `embed`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint: a fine-tuned `best.safetensors`, an MAE `encoder.safetensors`, or a timm
    /// file with --model. Only the encoder is used.
    #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
    pub weights: Option<PathBuf>,
    /// Several checkpoints, comma-separated: one panel each, side by side.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub compare: Vec<PathBuf>,
    /// Panel names for --compare, comma-separated. Default: the file stems.
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// Model preset, needed only for checkpoints that do not record their configuration.
    #[arg(long)]
    pub model: Option<String>,
    /// Data set: ferplus, rafdb, affectnet7, affectnet8, fer2013, folder.
    #[arg(long)]
    pub dataset: String,
    /// Data set root.
    #[arg(long)]
    pub data: PathBuf,
    /// Split whose images are embedded.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Sample ids to leave out (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// At most this many images; a larger split is subsampled evenly (every n/N-th image, the
    /// same ones on every run).
    #[arg(long, default_value_t = 2000)]
    pub max_images: usize,
    /// t-SNE perplexity; needs more than 3 x perplexity images.
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f32,
    /// t-SNE iterations.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Barnes–Hut angle (0 < theta; smaller is more exact and slower).
    #[arg(long, default_value_t = 0.5)]
    pub theta: f32,
    /// Seed of the t-SNE starting map.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory. Default: `embed-<dataset>-<split>` beside the (first) checkpoint.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
    /// Also write the page's files (one checkpoint only): `tsne-features.bin`, each image's
    /// features scaled to unit length as int8 (d_model bytes a row), and `tsne-thumbs.png`, a
    /// sprite of 48x48 grey thumbnails, 32 a row; both in the order of tsne.json's points.
    #[arg(long, conflicts_with = "compare")]
    pub web: bool,
}

/// Embeds a split with one or more checkpoints and draws the t-SNE maps.
pub fn run(args: Args) -> Result<()> {
    if args.batch == 0 || args.workers == 0 || args.max_images == 0 {
        bail!("--batch, --workers and --max-images must be at least 1");
    }
    if !args.names.is_empty() && args.names.len() != args.compare.len() {
        bail!(
            "--names gives {} names for {} --compare checkpoints",
            args.names.len(),
            args.compare.len()
        );
    }
    let mut unique = args.names.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != args.names.len() {
        bail!("--names must be distinct: {}", args.names.join(", "));
    }
    // Fail on a mistyped path before the data set is read.
    for path in args.weights.iter().chain(&args.compare) {
        if !path.is_file() {
            bail!("cannot read weights {}: no such file", path.display());
        }
    }
    dispatch(args.device, args)
}

/// One checkpoint's panel.
struct Panel {
    name: String,
    weights: PathBuf,
    points: Vec<[f32; 2]>,
    scores: Separation,
}

impl Job for Args {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, _backend: &str) -> Result<()> {
        let checkpoints = self.checkpoints();
        let kind = DatasetKind::parse(&self.dataset)?;
        let options = LoadOptions {
            ferplus_mode: FerPlusMode::Majority,
            exclude: self.exclude.clone(),
        };
        let split = pipeline::load(kind, &self.data, &self.split, &options, self.workers)?;
        println!("{}", split.split.report());

        // The same images for every checkpoint, chosen before any model is loaded.
        let keep = even_subsample(split.images.len(), self.max_images);
        let settings = TsneSettings {
            perplexity: self.perplexity,
            iterations: self.iterations,
            theta: self.theta,
            seed: self.seed,
        };
        settings.validate(keep.len())?;
        let images: Vec<&DecodedImage> = keep.iter().map(|&i| &split.images[i]).collect();
        let ids: Vec<String> = keep
            .iter()
            .map(|&i| split.split.samples[i].id.clone())
            .collect();
        let classes: Vec<usize> = keep.iter().map(|&i| split.split.samples[i].class).collect();
        let names = &split.split.classes;
        if keep.len() < split.images.len() {
            println!(
                "embedding {} of {} images (evenly spaced)",
                keep.len(),
                split.images.len()
            );
        }

        let out = self.out.clone().unwrap_or_else(|| {
            let dir = checkpoints[0].1.parent().map(PathBuf::from);
            dir.unwrap_or_default()
                .join(format!("embed-{}-{}", kind.name(), self.split))
        });
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;

        let mut panels = Vec::new();
        let mut feature_dim = 0;
        for (name, weights) in &checkpoints {
            let model = load_encoder::<B::InnerBackend>(weights, self.model.as_deref(), &device)?;
            let dim = model.config().d_model;
            feature_dim = dim;
            let features = pooled_features(&model, &images, self.batch, &device);
            check_finite(&features, dim, &ids)
                .with_context(|| format!("features of {}", weights.display()))?;
            let csv = if checkpoints.len() == 1 {
                out.join("embeddings.csv")
            } else {
                out.join(format!("embeddings-{}.csv", file_safe(name)))
            };
            write_csv(&csv, &ids, &classes, names, &features, dim)?;
            if self.web {
                let path = out.join(WEB_FEATURES);
                let bytes: Vec<u8> = quantise_rows(&features, dim)
                    .into_iter()
                    .map(|v| v as u8)
                    .collect();
                write_atomic(&path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }

            let points = tsne_2d(&features, dim, &ids, &settings)
                .with_context(|| format!("t-SNE of the features of {}", weights.display()))?;
            let scores = Separation::measure(&points, &classes, KNN_K);
            println!(
                "{name}: {} images, {dim}-d features -> 2-d map: {} (in the map)",
                ids.len(),
                scores.summary()
            );
            panels.push(Panel {
                name: name.clone(),
                weights: weights.clone(),
                points,
                scores,
            });
        }

        let mut json = tsne_json(&self, kind, &settings, names, &ids, &classes, &panels);
        if self.web {
            let path = out.join(WEB_SPRITE);
            thumbnail_sprite(&images, THUMB_SIDE, THUMB_COLUMNS)
                .save(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            json["web"] = serde_json::json!({
                "features": WEB_FEATURES,
                "dim": feature_dim,
                "encoding": "int8 rows, round(127 f / |f|) of the pooled features f",
                "sprite": WEB_SPRITE,
                "thumb": THUMB_SIDE,
                "columns": THUMB_COLUMNS,
            });
        }
        write_json(&out.join("tsne.json"), &json)?;
        let header = [
            format!(
                "t-SNE of {} {}, {} images",
                kind.name(),
                self.split,
                ids.len()
            ),
            format!(
                "perplexity {}, {} iterations, seed {}",
                self.perplexity, self.iterations, self.seed
            ),
        ];
        let png = out.join("tsne.png");
        tsne_png(&panels, &classes, names, &header, &png)?;
        println!(
            "wrote {}, tsne.json and tsne.png to {}",
            csv_name(&panels),
            out.display()
        );
        Ok(())
    }
}

impl Args {
    /// (panel name, path) per checkpoint; names are unique so that files do not collide.
    fn checkpoints(&self) -> Vec<(String, PathBuf)> {
        let paths: Vec<PathBuf> = match &self.weights {
            Some(w) => vec![w.clone()],
            None => self.compare.clone(),
        };
        if !self.names.is_empty() {
            return self.names.iter().cloned().zip(paths).collect();
        }
        let stem = |p: &Path| {
            p.file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned())
        };
        let stems: Vec<String> = paths.iter().map(|p| stem(p)).collect();
        paths
            .iter()
            .zip(&stems)
            .enumerate()
            .map(|(i, (p, s))| {
                // Two runs' best.safetensors: prefix the run directory, then the position.
                let clash = stems.iter().filter(|t| *t == s).count() > 1;
                let name = match p.parent().and_then(Path::file_name) {
                    Some(dir) if clash => format!("{}-{s}", dir.to_string_lossy()),
                    _ if clash => format!("{s}{}", i + 1),
                    _ => s.clone(),
                };
                (name, p.clone())
            })
            .collect()
    }
}

fn csv_name(panels: &[Panel]) -> &'static str {
    if panels.len() == 1 {
        "embeddings.csv"
    } else {
        "embeddings-<name>.csv"
    }
}

/// `name` with every character other than letters, digits, `.`, `_` and `-` replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `m` indices spread evenly over `0..n` (all of them when `n <= m`).
fn even_subsample(n: usize, m: usize) -> Vec<usize> {
    if n <= m {
        return (0..n).collect();
    }
    (0..m).map(|i| i * n / m).collect()
}

/// Pooled features (`forward_features`) of the evaluation view of each image, row-major.
fn pooled_features<B: Backend>(
    model: &Vit<B>,
    images: &[&DecodedImage],
    batch: usize,
    device: &B::Device,
) -> Vec<f32> {
    let size = model.config().img_size;
    let mut out = Vec::with_capacity(images.len() * model.config().d_model);
    for chunk in images.chunks(batch) {
        let pixels: Vec<f32> = chunk.iter().flat_map(|img| eval_view(img, size)).collect();
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(pixels, [chunk.len(), 3, size, size]),
            device,
        );
        let f = model.forward_features(x).into_data();
        out.extend(f.convert::<f32>().to_vec::<f32>().expect("float features"));
    }
    out
}

/// Each row scaled to unit length and rounded to steps of 1/127 as int8: the page ranks
/// neighbours by cosine similarity, which needs only the directions. A zero row stays zero.
fn quantise_rows(features: &[f32], dim: usize) -> Vec<i8> {
    features
        .chunks(dim)
        .flat_map(|row| {
            let norm = row
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            row.iter()
                .map(move |v| (127.0 * v / norm).round().clamp(-127.0, 127.0) as i8)
        })
        .collect()
}

/// The images as `side` x `side` grey thumbnails (resized when they differ), `columns` a row
/// in the given order, the last row padded with black.
fn thumbnail_sprite(images: &[&DecodedImage], side: u32, columns: u32) -> GrayImage {
    let rows = (images.len() as u32).div_ceil(columns).max(1);
    let mut sprite = GrayImage::new(side * columns.min(images.len().max(1) as u32), side * rows);
    for (k, img) in images.iter().enumerate() {
        let grey: Vec<u8> = match img.channels {
            3 => img
                .pixels
                .chunks(3)
                .map(|p| {
                    (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8
                })
                .collect(),
            _ => img.pixels.clone(),
        };
        let thumb = GrayImage::from_raw(img.width as u32, img.height as u32, grey)
            .expect("a decoded image holds width x height x channels values");
        let thumb = if thumb.dimensions() == (side, side) {
            thumb
        } else {
            image::imageops::resize(&thumb, side, side, image::imageops::FilterType::Triangle)
        };
        let (x0, y0) = ((k as u32 % columns) * side, (k as u32 / columns) * side);
        for (x, y, p) in thumb.enumerate_pixels() {
            sprite.put_pixel(x0 + x, y0 + y, Luma(p.0));
        }
    }
    sprite
}

/// Quotes a CSV field when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(
    path: &Path,
    ids: &[String],
    classes: &[usize],
    names: &[String],
    features: &[f32],
    dim: usize,
) -> Result<()> {
    let mut text = String::from("id,label");
    for k in 0..dim {
        write!(text, ",f{k}").expect("writing to a string");
    }
    text.push('\n');
    for ((id, &c), row) in ids.iter().zip(classes).zip(features.chunks(dim)) {
        text.push_str(&csv_field(id));
        text.push(',');
        text.push_str(&csv_field(&names[c]));
        for v in row {
            write!(text, ",{v}").expect("writing to a string");
        }
        text.push('\n');
    }
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn tsne_json(
    args: &Args,
    kind: DatasetKind,
    settings: &TsneSettings,
    names: &[String],
    ids: &[String],
    classes: &[usize],
    panels: &[Panel],
) -> serde_json::Value {
    let panels: Vec<serde_json::Value> = panels
        .iter()
        .map(|p| {
            let points: Vec<serde_json::Value> = p
                .points
                .iter()
                .zip(ids.iter().zip(classes))
                .map(|(xy, (id, &c))| {
                    serde_json::json!({ "x": json_f32(xy[0]), "y": json_f32(xy[1]), "class": c, "id": id })
                })
                .collect();
            serde_json::json!({
                "name": p.name,
                "weights": p.weights,
                "knn_accuracy": p.scores.knn_accuracy,
                "knn_k": p.scores.k,
                "silhouette": p.scores.silhouette,
                "points": points,
            })
        })
        .collect();
    serde_json::json!({
        "dataset": kind.name(),
        "split": args.split,
        "classes": names,
        "images": ids.len(),
        "settings": {
            "perplexity": json_f32(settings.perplexity),
            "iterations": settings.iterations,
            "theta": json_f32(settings.theta),
            "seed": settings.seed,
            "max_images": args.max_images,
            "features": "pooled encoder output (forward_features) of the evaluation view",
            "scores": "computed in the 2-D map: leave-one-out kNN accuracy, mean silhouette",
        },
        "panels": panels,
    })
}

/// Layout of `tsne.png`: a header line, then per checkpoint a panel of `PANEL_W` with a
/// two-line title above a square map of `MAP` pixels, and a legend column on the right.
const HEADER: u32 = 56;
const TITLE: u32 = 48;
const MAP: u32 = 460;
const MARGIN: u32 = 20;
const PANEL_W: u32 = MAP + 2 * MARGIN;
const LEGEND_W: u32 = 230;

/// Draws the maps side by side, points coloured by class, with a legend of class names and
/// counts. The size is `(panels · 500 + 230) x 584` pixels.
fn tsne_png(
    panels: &[Panel],
    classes: &[usize],
    names: &[String],
    header: &[String; 2],
    path: &Path,
) -> Result<()> {
    let w = panels.len() as u32 * PANEL_W + LEGEND_W;
    let h = HEADER + TITLE + MAP + MARGIN;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    draw_text(&mut img, &header[0], MARGIN, 10, 2, INK);
    draw_text(&mut img, &header[1], MARGIN, 30, 2, Rgb([70, 70, 70]));
    let radius = if classes.len() > 600 { 2.0 } else { 3.0 };

    for (k, panel) in panels.iter().enumerate() {
        let x0 = k as u32 * PANEL_W + MARGIN;
        let y0 = HEADER + TITLE;
        let name: String = panel.name.chars().take((MAP / 12) as usize).collect();
        draw_text(&mut img, &name, x0, HEADER + 4, 2, INK);
        let sil = panel
            .scores
            .silhouette
            .map_or("-".to_string(), |s| format!("{s:.3}"));
        let scores = format!(
            "kNN-{} acc {:.1} %  silhouette {sil}",
            panel.scores.k,
            100.0 * panel.scores.knn_accuracy
        );
        draw_text(&mut img, &scores, x0, HEADER + 24, 2, Rgb([70, 70, 70]));
        stroke_rect(&mut img, x0, y0, MAP, MAP, 1, Rgb([170, 170, 170]));

        // One scale for both axes (t-SNE distances have no preferred direction).
        let (lo, span) = square_bounds(&panel.points);
        let inner = (MAP - 2 * 8) as f64;
        for (p, &c) in panel.points.iter().zip(classes) {
            let px = x0 as f64 + 8.0 + (p[0] as f64 - lo[0]) / span * inner;
            let py = y0 as f64 + 8.0 + (1.0 - (p[1] as f64 - lo[1]) / span) * inner;
            fill_disc(&mut img, px, py, radius, PALETTE[c % PALETTE.len()]);
        }
    }

    let mut counts = vec![0usize; names.len()];
    for &c in classes {
        counts[c] += 1;
    }
    let max_chars = ((LEGEND_W - 50) / 12) as usize;
    let entries: Vec<(String, Rgb<u8>)> = names
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(c, (name, n))| {
            let count = format!(" {n}");
            let room = max_chars.saturating_sub(count.len());
            let short: String = name.chars().take(room).collect();
            (format!("{short}{count}"), PALETTE[c % PALETTE.len()])
        })
        .collect();
    let legend_x = panels.len() as u32 * PANEL_W + 4;
    draw_legend(&mut img, &entries, legend_x, HEADER + TITLE);
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The lower corner and the side of a square that holds all points.
fn square_bounds(points: &[[f32; 2]]) -> ([f64; 2], f64) {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for p in points {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d] as f64);
            hi[d] = hi[d].max(p[d] as f64);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-9);
    // Centre the shorter side.
    let lo = [0, 1].map(|d| lo[d] - (span - (hi[d] - lo[d])) / 2.0);
    (lo, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsampling_is_even_and_distinct() {
        assert_eq!(even_subsample(3, 5), [0, 1, 2]);
        assert_eq!(even_subsample(10, 4), [0, 2, 5, 7]);
        let s = even_subsample(1001, 1000);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.len() == 1000);
    }

    #[test]
    fn csv_fields_with_commas_are_quoted() {
        assert_eq!(csv_field("a.png"), "a.png");
        assert_eq!(csv_field("a,b \"x\""), "\"a,b \"\"x\"\"\"");
        assert_eq!(file_safe("run 1/best"), "run_1_best");
    }

    #[test]
    fn quantised_rows_keep_their_direction() {
        let features = [3.0, 4.0, 0.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0];
        let q = quantise_rows(&features, 3);
        assert_eq!(&q[..6], [76, 102, 0, 0, 0, 0]); // 127 * (0.6, 0.8); the zero row stays
        let cos = (-q[6] as f32 + q[7] as f32) / (2f32.sqrt() * 127.0);
        assert!((cos - 1.0).abs() < 1.0 / 127.0, "{cos}");
    }

    #[test]
    fn thumbnails_sit_row_major_in_the_sprite() {
        let img = |v: u8, side: usize, channels: usize| DecodedImage {
            width: side,
            height: side,
            channels,
            pixels: vec![v; side * side * channels],
        };
        let images = [img(10, 4, 1), img(20, 4, 1), img(30, 8, 3)];
        let refs: Vec<&DecodedImage> = images.iter().collect();
        let sprite = thumbnail_sprite(&refs, 4, 2);
        assert_eq!(sprite.dimensions(), (8, 8));
        assert_eq!(sprite.get_pixel(1, 1).0, [10]);
        assert_eq!(sprite.get_pixel(5, 2).0, [20]);
        // Third image: resized from 8 to 4 pixels and turned grey, on the second row.
        assert_eq!(sprite.get_pixel(2, 6).0, [30]);
        assert_eq!(sprite.get_pixel(6, 6).0, [0]);
    }
}
