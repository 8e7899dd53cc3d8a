//! `pretrain`: MAE pre-training of the encoder on any folder of images (no labels), with the
//! run-directory conventions of `finetune`: `config.json`, `metrics.jsonl`, checkpoints
//! (`full.safetensors` with the decoder, `encoder.safetensors` for `finetune --init`),
//! reconstruction grids and `report.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use image::{Rgb, RgbImage};
use mimic_core::augment::{eval_view, AugmentConfig};
use mimic_core::backend::{AutodiffBackend, Backend};
use mimic_core::data::{decode_all, unlabelled_images, DecodedImage, LoadOptions};
use mimic_core::mae::{load_mae, Mae, MaeConfig, Masking, MAE_CONFIG_KEY};
use mimic_core::model::Precision;
use mimic_core::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use mimic_core::train::{
    mae_gradients, CosineSchedule, GroupedOptimizer, OptimKind, OptimizerConfig,
};
use mimic_core::weights::{assign_stable_ids, first_non_finite, TensorMap, CONFIG_KEY};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::backend::{dispatch, DeviceKind, Job};
use crate::cmd::finetune::utc_stamp;
use crate::pipeline::{BatchSource, EpochBatches};
use crate::plot::draw_text;
use crate::progress::Progress;
use crate::resume::{self, ResumeState};
use crate::run::{non_finite, write_json, RunDir};

/// Arguments of `pretrain`. Defaults follow MAE (He et al. 2022): mask ratio 0.75, norm-pix
/// loss, AdamW (0.9, 0.95), weight decay 0.05, lr = blr · batch / 256, warm-up then cosine,
/// random resized crop (0.2–1) + flip.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Folder of images, searched recursively (png, jpg, bmp, gif, tiff, webp).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Continue the interrupted run in this directory from its last complete epoch, with its
    /// saved settings (bit-identical to an uninterrupted run on the CPU backend).
    #[arg(long, conflicts_with_all = [
        "data", "model", "init", "out", "mask_ratio", "decoder_dim", "decoder_depth",
        "decoder_heads", "norm_pix_loss", "epochs", "max_steps", "batch", "blr", "lr", "min_lr",
        "warmup_epochs", "weight_decay", "crop_scale", "val_images", "recon_every", "seed",
        "workers", "shards", "precision", "log_every",
    ])]
    pub resume: Option<PathBuf>,
    /// Encoder preset (see `train-native presets`). Default: vit_cpu_patch6_48, or the
    /// architecture stored in --init.
    #[arg(long)]
    pub model: Option<String>,
    /// Share of patches removed per image. Default: 0.75, or the value stored in --init.
    #[arg(long)]
    pub mask_ratio: Option<f64>,
    /// Decoder width. Default: 512 for the 224-px presets, scaled down for the small ones.
    #[arg(long)]
    pub decoder_dim: Option<usize>,
    /// Decoder blocks.
    #[arg(long)]
    pub decoder_depth: Option<usize>,
    /// Decoder attention heads.
    #[arg(long)]
    pub decoder_heads: Option<usize>,
    /// Normalise each target patch by its mean and unbiased variance (MAE's norm_pix_loss).
    #[arg(long, action = clap::ArgAction::Set)]
    pub norm_pix_loss: Option<bool>,
    /// Continue from a full checkpoint (our full.safetensors or an official *_full.pth).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Run directory. Default: runs/pretrain-<UTC time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Stop after this many steps (smoke tests); the schedule still spans the epochs.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Base learning rate; the peak rate is blr · batch / 256.
    #[arg(long, default_value_t = 1.5e-4)]
    pub blr: f64,
    /// Peak learning rate (overrides --blr).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate of the cosine schedule.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
    /// Epochs of linear warm-up. Default: 2, or a quarter of the epochs when that is less.
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// AdamW weight decay (not on biases, norms, position / cls / mask tokens).
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    /// Smallest random-resized-crop area share.
    #[arg(long, default_value_t = 0.2)]
    pub crop_scale: f64,
    /// Images held out (evenly spaced over the sorted list) for the validation loss and the
    /// reconstruction grid.
    #[arg(long, default_value_t = 16)]
    pub val_images: usize,
    /// Write a reconstruction grid every N epochs (and after the last).
    #[arg(long, default_value_t = 5)]
    pub recon_every: usize,
    /// Random seed (initialisation, augmentation, masking, data order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data-loading threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Split each batch into N shards that run forward and backward on their own threads
    /// (default: one per core on the CPU, up to 8; 1 on a GPU). Runs repeat exactly at the
    /// same N.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Number format of the encoder's and decoder's matrix products: f32, or bf16 (mixed
    /// precision: bf16 products, f32 weights, gradients, norms and loss; pays off on CUDA).
    #[arg(long, default_value = "f32", value_parser = Precision::parse)]
    pub precision: Precision,
    /// Write a metrics line every N steps.
    #[arg(long, default_value_t = 20)]
    pub log_every: usize,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// The resolved settings of a pre-training run, written to `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Encoder preset name (or "from --init").
    pub model_preset: String,
    /// The full MAE configuration.
    pub mae: MaeConfig,
    /// Image folder.
    pub data: PathBuf,
    /// Full checkpoint continued from.
    pub init: Option<PathBuf>,
    /// Run directory.
    pub out: PathBuf,
    /// Epochs.
    pub epochs: usize,
    /// Step limit for smoke runs.
    pub max_steps: Option<usize>,
    /// Images per batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up epochs.
    pub warmup_epochs: f64,
    /// Optimiser.
    pub optimizer: OptimizerConfig,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Held-out images.
    pub val_images: usize,
    /// Reconstruction interval in epochs.
    pub recon_every: usize,
    /// Seed.
    pub seed: u64,
    /// Loader threads.
    pub workers: usize,
    /// Shards per step (absent in configs from before shards, or not yet resolved for the
    /// device).
    #[serde(default)]
    pub shards: Option<usize>,
    /// Number format of the matrix products (absent in configs from before it: f32).
    #[serde(default)]
    pub precision: Precision,
    /// Metrics interval in steps.
    pub log_every: usize,
    /// Continue the run in `out` (set by `--resume`; not part of config.json).
    #[serde(skip)]
    pub resume: bool,
}

/// Resolves the arguments, then pre-trains on the chosen backend.
pub fn run(args: Args) -> Result<()> {
    let device = args.device;
    let config = match &args.resume {
        Some(dir) => {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("--resume {}: cannot read {}", dir.display(), path.display())
            })?;
            let mut config: PretrainConfig = serde_json::from_str(&text).with_context(|| {
                format!("--resume: {} is not a pretrain config", path.display())
            })?;
            config.out = dir.clone();
            config.resume = true;
            config
        }
        None => resolve(args, &utc_stamp())?,
    };
    dispatch(device, config).map(|_| ())
}

/// The MAE configuration: stored in our --init checkpoint, else the preset's defaults; then
/// the decoder / masking flags.
fn mae_config(args: &Args) -> Result<(String, MaeConfig)> {
    let from_file = match &args.init {
        Some(path) => {
            let metadata = TensorMap::read_metadata(path)
                .with_context(|| format!("--init {}", path.display()))?;
            match metadata.get(MAE_CONFIG_KEY) {
                Some(json) => Some(serde_json::from_str::<MaeConfig>(json).with_context(|| {
                    format!("--init {}: bad {MAE_CONFIG_KEY} metadata", path.display())
                })?),
                None => None,
            }
        }
        None => None,
    };
    let (name, mut mae) = match (from_file, &args.model) {
        (Some(stored), None) => ("from --init".to_string(), stored),
        (Some(stored), Some(model)) => {
            let preset = MaeConfig::for_preset(model)?;
            if preset.encoder.d_model != stored.encoder.d_model
                || preset.encoder.depth != stored.encoder.depth
                || preset.encoder.img_size != stored.encoder.img_size
            {
                bail!(
                    "--model {model} differs from the architecture stored in --init; leave \
                     --model out to continue with the stored one"
                );
            }
            (model.clone(), stored)
        }
        (None, model) => {
            let model = model.clone().unwrap_or_else(|| "vit_cpu_patch6_48".into());
            let mae = MaeConfig::for_preset(&model).context("--model")?;
            (model, mae)
        }
    };
    if let Some(v) = args.mask_ratio {
        mae.mask_ratio = v;
    }
    if let Some(v) = args.decoder_dim {
        mae.decoder_dim = v;
    }
    if let Some(v) = args.decoder_depth {
        mae.decoder_depth = v;
    }
    if let Some(v) = args.decoder_heads {
        mae.decoder_heads = v;
    }
    if let Some(v) = args.norm_pix_loss {
        mae.norm_pix_loss = v;
    }
    mae.validate()
        .context("--mask-ratio / --decoder-dim / --decoder-depth / --decoder-heads")?;
    let n_patches = mae.encoder.n_patches();
    if mae.len_keep() == n_patches {
        bail!(
            "--mask-ratio {}: masks none of the {n_patches} patches, and MAE's loss is taken over \
             the masked patches only, so it would stay 0 and nothing would train; use a ratio \
             that masks at least one patch (MAE's is 0.75)",
            mae.mask_ratio
        );
    }
    Ok((name, mae))
}

fn resolve(args: Args, now: &str) -> Result<PretrainConfig> {
    let (model_preset, mae) = mae_config(&args)?;
    if args.shards == Some(0) {
        bail!("--shards must be at least 1");
    }
    if args.epochs == 0 || args.batch == 0 || args.workers == 0 || args.log_every == 0 {
        bail!("--epochs, --batch, --workers and --log-every must be at least 1");
    }
    if args.recon_every == 0 || args.val_images == 0 {
        bail!("--recon-every and --val-images must be at least 1 (the held-out images give the validation loss and the reconstruction grids)");
    }
    let lr = args.lr.unwrap_or(args.blr * args.batch as f64 / 256.0);
    if !(lr > 0.0 && lr.is_finite()) || args.min_lr < 0.0 || args.min_lr > lr {
        bail!("--lr / --blr must give a positive rate and --min-lr lie in [0, lr] (lr {lr})");
    }
    let warmup_epochs = args
        .warmup_epochs
        .unwrap_or_else(|| (args.epochs as f64 / 4.0).min(2.0));
    if !(0.0..=args.epochs as f64).contains(&warmup_epochs) {
        bail!("--warmup-epochs {warmup_epochs} must be in [0, epochs]");
    }
    let optimizer = OptimizerConfig {
        kind: OptimKind::AdamW,
        weight_decay: args.weight_decay,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        layer_decay: 1.0,
        clip_grad: None,
    };
    optimizer.validate().context("--weight-decay")?;
    let augment = AugmentConfig {
        scale_min: args.crop_scale,
        ..AugmentConfig::default()
    };
    augment.validate().context("--crop-scale")?;
    Ok(PretrainConfig {
        model_preset,
        mae,
        data: args.data.expect("clap requires --data without --resume"),
        init: args.init,
        out: args
            .out
            .unwrap_or_else(|| PathBuf::from(format!("runs/pretrain-{now}"))),
        epochs: args.epochs,
        max_steps: args.max_steps,
        batch: args.batch,
        lr,
        min_lr: args.min_lr,
        warmup_epochs,
        optimizer,
        augment,
        val_images: args.val_images,
        recon_every: args.recon_every,
        seed: args.seed,
        workers: args.workers,
        shards: args.shards,
        precision: args.precision,
        log_every: args.log_every,
        resume: false,
    })
}

/// Splits the sorted image list into training images and `n_val` evenly spaced held-out ones.
fn hold_out(n: usize, n_val: usize) -> (Vec<usize>, Vec<usize>) {
    let val: Vec<usize> = (0..n_val).map(|k| k * n / n_val.max(1)).collect();
    let train = (0..n).filter(|i| !val.contains(i)).collect();
    (train, val)
}

impl Job for PretrainConfig {
    type Output = ();

    fn run<B: AutodiffBackend>(mut self, device: B::Device, backend: &str) -> Result<()> {
        let started = Instant::now();
        // The resolved count goes into config.json: a resumed run keeps it on any machine (the
        // MAE encoder has no stochastic depth, so only the order of sums depends on it).
        let shards = crate::backend::resolve_shards(self.shards, backend)?;
        self.shards = Some(shards);
        crate::backend::check_precision(self.precision, backend)?;
        let mae = &self.mae;
        let size = mae.encoder.img_size;

        // 1. Images: listed, decoded once, a few held out for validation and the grids.
        let split = unlabelled_images(&self.data, &LoadOptions::default())
            .with_context(|| format!("--data {}", self.data.display()))?;
        let decoded = decode_all(&split.samples, self.workers)
            .with_context(|| format!("cannot decode the images of {}", self.data.display()))?;
        let n = decoded.len();
        if n < 2 * self.val_images.max(1) {
            bail!(
                "--data {}: {n} images are too few to hold out --val-images {} (need at least \
                 twice as many)",
                self.data.display(),
                self.val_images
            );
        }
        let (train_ids, val_ids) = hold_out(n, self.val_images);
        let bytes: usize = decoded.iter().map(|d| d.pixels.len()).sum();
        println!(
            "{} images in {} ({} train, {} held out; {:.0} MiB decoded); skipped: {}",
            n,
            self.data.display(),
            train_ids.len(),
            val_ids.len(),
            bytes as f64 / (1 << 20) as f64,
            if split.dropped.is_empty() {
                "none".to_string()
            } else {
                split
                    .dropped
                    .iter()
                    .map(|d| format!("{} {}", d.count, d.reason))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let mut decoded: Vec<Option<DecodedImage>> = decoded.into_iter().map(Some).collect();
        let val: Vec<DecodedImage> = val_ids
            .iter()
            .map(|&i| decoded[i].take().expect("held-out ids are distinct"))
            .collect();
        let train: Vec<DecodedImage> = decoded.into_iter().flatten().collect();

        // 2. The model: fresh, continued from a full checkpoint, or the state of an
        //    interrupted run.
        let resume_point = match self.resume {
            true => Some(resume::load(&self.out)?),
            false => None,
        };
        B::seed(&device, self.seed);
        let model: Mae<B> = match (&self.init, &resume_point) {
            (_, Some(point)) => {
                let map = TensorMap::read(&point.model)?;
                load_mae::<B>(mae, map, &device)
                    .with_context(|| format!("cannot resume from {}", point.model.display()))?
                    .0
            }
            (None, None) => mae.init(&device)?,
            (Some(path), None) => {
                let map =
                    TensorMap::read(path).with_context(|| format!("--init {}", path.display()))?;
                let (model, report) = load_mae::<B>(mae, map, &device)
                    .with_context(|| format!("--init {}", path.display()))?;
                println!("init {}: {report}", path.display());
                model
            }
        };
        let mut model = model.with_precision(self.precision);
        assign_stable_ids(&mut model);
        let mut optim = GroupedOptimizer::new(&self.optimizer, &mut model, mae.encoder.depth)?;
        if let Some(point) = &resume_point {
            optim = optim
                .load_state_bytes(&point.optimizer, &device)
                .with_context(|| format!("cannot resume {}", self.out.display()))?;
        }

        let n_train = train.len();
        crate::backend::note_effective_sizes(self.batch, shards, n_train);
        let steps_per_epoch = n_train.div_ceil(self.batch);
        let total_steps = steps_per_epoch * self.epochs;
        let schedule = CosineSchedule {
            base_lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps,
        };
        let mut run = match &resume_point {
            Some(point) => RunDir::reopen(&self.out, point.state.metrics_len)?,
            None => RunDir::create(&self.out, &self)?,
        };
        println!(
            "pretrain on {backend}: MAE {} ({:.2} M parameters; decoder {} x {} wide), {} of {} \
             patches kept, norm-pix loss {}, batch {} in {shards} shard(s), {} matrix products, \
             {} steps/epoch, {} epochs, \
             lr {:.2e} (warm-up {} steps)",
            self.model_preset,
            burn::module::Module::num_params(&model) as f64 / 1e6,
            mae.decoder_depth,
            mae.decoder_dim,
            mae.len_keep(),
            mae.encoder.n_patches(),
            if mae.norm_pix_loss { "on" } else { "off" },
            self.batch,
            self.precision.name(),
            steps_per_epoch,
            self.epochs,
            self.lr,
            schedule.warmup_steps,
        );
        println!("run directory: {}", run.path.display());
        if let Some(point) = &resume_point {
            println!(
                "resuming after epoch {} (step {})",
                point.state.epoch, point.state.step
            );
        }

        let source = Arc::new(BatchSource {
            images: Arc::new(train),
            targets: Arc::new(vec![vec![1.0]; n_train]),
            augment: self.augment.clone(),
            size,
            views: 1,
        });

        // 3. The epochs.
        let limit = self.max_steps.unwrap_or(usize::MAX).min(total_steps);
        let bar = Progress::new(limit);
        let (mut step, mut images_seen, mut first_epoch, mut secs_before) = (0, 0, 0, 0.0);
        if let Some(point) = &resume_point {
            let s = &point.state;
            (step, images_seen) = (s.step, s.images_seen);
            (first_epoch, secs_before) = (s.epoch + 1, s.train_seconds);
            bar.set_position(step);
        }
        let train_start = Instant::now();
        let mut last_val = f64::NAN;
        for epoch in first_epoch..self.epochs {
            if step >= limit {
                break;
            }
            let (mut sum_loss, mut n_loss) = (0.0, 0usize);
            let mut window = (Instant::now(), 0usize);
            for batch in EpochBatches::epoch(&source, self.batch, self.seed, epoch, self.workers) {
                if step >= limit {
                    break;
                }
                let lr = schedule.lr(step);
                let images = Tensor::<B, 4>::from_data(
                    TensorData::new(batch.pixels, [batch.n, 3, size, size]),
                    &device,
                );
                let mut rng =
                    StdRng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x2545_F491));
                let masking = model.random_masking(&mut rng, batch.n);
                let (value, grads) = mae_gradients(&model, images, &masking, shards);
                if !value.is_finite() {
                    bar.abandon();
                    let last_good = run.path.join("full.safetensors");
                    return Err(non_finite(
                        &format!("loss ({value})"),
                        step,
                        epoch,
                        &last_good,
                    ));
                }
                model = optim.step_params(lr, model, grads);
                step += 1;
                images_seen += batch.n;
                window.1 += batch.n;
                sum_loss += value as f64;
                n_loss += 1;
                bar.inc();
                if step % self.log_every == 0 || step == limit {
                    let ips = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
                    run.log(serde_json::json!({
                        "step": step, "epoch": epoch, "loss": value, "lr": lr, "images_per_s": ips,
                    }))?;
                    bar.status(
                        format!("loss {value:.4}  lr {lr:.2e}  {ips:.1} img/s"),
                        format!(
                            "epoch {epoch:>3} step {step:>6}/{limit}  loss {value:.4}  lr {lr:.3e}  {ips:7.1} img/s"
                        ),
                    );
                    window = (Instant::now(), 0);
                }
            }

            // End of epoch: held-out loss with a fixed masking, checkpoints, maybe a grid.
            // A finite loss can still come with non-finite gradients: never save such weights.
            if let Some(name) = first_non_finite(&mut model) {
                bar.abandon();
                let last_good = run.path.join("full.safetensors");
                return Err(non_finite(
                    &format!("values in {name}"),
                    step,
                    epoch,
                    &last_good,
                ));
            }
            let eval = model.valid();
            last_val = held_out_loss(&eval, &val, self.seed, &device);
            let train_loss = sum_loss / n_loss.max(1) as f64;
            let meta = self.save(&run, &model, epoch, last_val)?;
            let last_epoch = epoch + 1 == self.epochs || step >= limit;
            if (epoch + 1) % self.recon_every == 0 || last_epoch {
                let png = run.path.join(format!("recon-epoch{:03}.png", epoch + 1));
                reconstruction_grid(&eval, &val, self.seed, &device, &png)?;
                std::fs::copy(&png, run.path.join("recon.png"))
                    .with_context(|| format!("cannot write {}", run.path.display()))?;
            }
            run.log(serde_json::json!({
                "epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": last_val,
            }))?;
            let state = ResumeState {
                epoch,
                step,
                best: last_val,
                best_epoch: epoch,
                metrics_len: run.metrics_len()?,
                images_seen,
                train_seconds: secs_before + train_start.elapsed().as_secs_f64(),
            };
            resume::save(&run.path, &model, &meta, &optim, &state)?;
            bar.line(format!(
                "epoch {epoch:>3}  train loss {train_loss:.4}  held-out loss {last_val:.4}"
            ));
        }
        bar.finish();
        let train_secs = secs_before + train_start.elapsed().as_secs_f64();
        let report = serde_json::json!({
            "model": self.model_preset,
            "backend": backend,
            "shards": shards,
            "precision": self.precision.name(),
            "train_images": n_train,
            "held_out_images": val.len(),
            "steps": step,
            "train_seconds": train_secs,
            "total_seconds": started.elapsed().as_secs_f64(),
            "images_per_s": images_seen as f64 / train_secs.max(1e-9),
            "final_val_loss": last_val,
            "full_checkpoint": run.path.join("full.safetensors"),
            "encoder_checkpoint": run.path.join("encoder.safetensors"),
        });
        write_json(&run.path.join("report.json"), &report)?;
        println!(
            "done in {train_secs:.0} s ({:.1} images/s): held-out loss {last_val:.4}",
            images_seen as f64 / train_secs.max(1e-9)
        );
        println!(
            "encoder for fine-tuning: {}  (finetune --init <it>)",
            run.path.join("encoder.safetensors").display()
        );
        println!("run written to {}", run.path.display());
        Ok(())
    }
}

impl PretrainConfig {
    /// Writes `full.safetensors` (encoder + decoder, to continue pre-training) and
    /// `encoder.safetensors` (what fine-tuning loads), both atomically.
    /// Returns the full checkpoint's metadata.
    fn save<B: Backend>(
        &self,
        run: &RunDir,
        model: &Mae<B>,
        epoch: usize,
        val: f64,
    ) -> Result<HashMap<String, String>> {
        let encoder_json = serde_json::to_string(&self.mae.encoder()).expect("config serialises");
        let mut meta = HashMap::from([
            (CONFIG_KEY.to_string(), encoder_json),
            ("mimic.epoch".into(), epoch.to_string()),
            ("mimic.val_loss".into(), format!("{val:.6}")),
        ]);
        run.save("encoder", &model.encoder, &meta)?;
        let mae_json = serde_json::to_string(&self.mae).expect("config serialises");
        meta.insert(MAE_CONFIG_KEY.into(), mae_json);
        run.save("full", model, &meta)?;
        Ok(meta)
    }
}

/// The held-out images as the model sees them (whole image, resized), one tensor.
fn held_out_tensor<B: Backend>(
    images: &[DecodedImage],
    size: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let pixels: Vec<f32> = images.iter().flat_map(|img| eval_view(img, size)).collect();
    Tensor::from_data(
        TensorData::new(pixels, [images.len(), 3, size, size]),
        device,
    )
}

/// A masking that is the same at every evaluation, so held-out losses are comparable.
fn fixed_masking<B: Backend>(model: &Mae<B>, n: usize, seed: u64) -> Masking {
    model.random_masking(&mut StdRng::seed_from_u64(seed ^ 0x00C0_FFEE), n)
}

/// Mean loss over the held-out images with a fixed masking.
fn held_out_loss<B: Backend>(
    model: &Mae<B>,
    images: &[DecodedImage],
    seed: u64,
    device: &B::Device,
) -> f64 {
    if images.is_empty() {
        return f64::NAN;
    }
    let size = model.config().encoder.img_size;
    let mut total = 0.0;
    for (k, chunk) in images.chunks(64).enumerate() {
        let x = held_out_tensor::<B>(chunk, size, device);
        let masking = fixed_masking(model, chunk.len(), seed.wrapping_add(k as u64));
        let loss: f32 = model.forward(x, &masking).loss.into_scalar().elem();
        total += loss as f64 * chunk.len() as f64;
    }
    total / images.len() as f64
}

/// Side of one grid cell: the image scaled up by a whole factor to at least 96 px.
pub fn cell_side(img_size: usize) -> u32 {
    let scale = 96usize.div_ceil(img_size).max(1);
    (img_size * scale) as u32
}

/// Writes a PNG with one row per held-out image (at most 8): original, masked input (removed
/// patches grey), reconstruction, and reconstruction with the visible patches pasted back.
pub fn reconstruction_grid<B: Backend>(
    model: &Mae<B>,
    images: &[DecodedImage],
    seed: u64,
    device: &B::Device,
    path: &Path,
) -> Result<()> {
    let images = &images[..images.len().min(8)];
    if images.is_empty() {
        bail!("no held-out images for the reconstruction grid (--val-images 0)");
    }
    let config = model.config();
    let (size, patch) = (config.encoder.img_size, config.encoder.patch_size);
    let x = held_out_tensor::<B>(images, size, device);
    let masking = fixed_masking(model, images.len(), seed);
    let pred = model.forward(x.clone(), &masking).pred;
    let recon = model.reconstruction(x.clone(), pred);
    let original: Vec<f32> = x.into_data().convert::<f32>().to_vec().expect("f32 pixels");
    let recon: Vec<f32> = recon
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 pixels");

    let cell = cell_side(size);
    let scale = cell as usize / size;
    let (gap, header) = (4u32, 20u32);
    let titles = ["original", "masked", "recon", "recon+visible"];
    let width = 4 * cell + 5 * gap;
    let height = header + images.len() as u32 * (cell + gap) + gap;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (c, title) in titles.iter().enumerate() {
        draw_text(
            &mut img,
            title,
            gap + c as u32 * (cell + gap),
            6,
            1,
            Rgb([20, 20, 20]),
        );
    }
    let grid = size / patch;
    let per = 3 * size * size;
    for (r, _) in images.iter().enumerate() {
        let removed = |y: usize, x: usize| {
            masking.mask[r * grid * grid + (y / patch) * grid + x / patch] > 0.5
        };
        let orig = &original[r * per..][..per];
        let rec = &recon[r * per..][..per];
        for c in 0..4 {
            let (x0, y0) = (
                gap + c as u32 * (cell + gap),
                header + r as u32 * (cell + gap),
            );
            for y in 0..size {
                for x in 0..size {
                    let src = match c {
                        0 => Some(orig),
                        1 => (!removed(y, x)).then_some(orig),
                        2 => Some(rec),
                        _ => Some(if removed(y, x) { rec } else { orig }),
                    };
                    let rgb = match src {
                        Some(v) => Rgb(std::array::from_fn(|ch| {
                            let value = v[(ch * size + y) * size + x] * IMAGENET_STD[ch]
                                + IMAGENET_MEAN[ch];
                            (value.clamp(0.0, 1.0) * 255.0).round() as u8
                        })),
                        None => Rgb([128, 128, 128]),
                    };
                    for dy in 0..scale {
                        for dx in 0..scale {
                            img.put_pixel(
                                x0 + (x * scale + dx) as u32,
                                y0 + (y * scale + dy) as u32,
                                rgb,
                            );
                        }
                    }
                }
            }
        }
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_images_are_evenly_spaced_and_disjoint() {
        let (train, val) = hold_out(10, 3);
        assert_eq!(val, [0, 3, 6]);
        assert_eq!(train, [1, 2, 4, 5, 7, 8, 9]);
        let (train, val) = hold_out(5, 0);
        assert!(val.is_empty());
        assert_eq!(train.len(), 5);
    }

    #[test]
    fn cells_are_whole_multiples_of_the_image() {
        assert_eq!(cell_side(48), 96);
        assert_eq!(cell_side(32), 96);
        assert_eq!(cell_side(224), 224);
        assert_eq!(cell_side(40), 120);
    }
}
