//! `bench`: throughput and memory of the model's hot paths, printed as figures (and as one JSON
//! line with `--json`, for scripts such as tests/reference/compare_torch.py). Timing never
//! decides a test: this command only reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Distribution, Tensor, TensorData};
use mimic_core::augment::AugmentConfig;
use mimic_core::backend::{AutodiffBackend, Backend};
use mimic_core::data::{decode_all, load_split, DatasetKind, LoadOptions};
use mimic_core::mae::MaeConfig;
use mimic_core::mix::MixConfig;
use mimic_core::model::{Precision, VitConfig};
use mimic_core::train::{
    finetune_gradients, mae_gradients, GroupedOptimizer, MimicLossConfig, MimicModel, OptimKind,
    OptimizerConfig, ProjKind, ProjectionHead,
};
use rand::SeedableRng;

use crate::backend::{dispatch, DeviceKind, Job};
use crate::pipeline::{BatchSource, EpochBatches};

/// What `bench` can measure.
const PARTS: &[&str] = &[
    "forward", "backward", "step", "mimic", "mae", "latency", "scaling", "pipeline",
];

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model preset (see `train-native presets`).
    #[arg(long, default_value = "vit_cpu_patch6_48")]
    pub model: String,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Classes of the head.
    #[arg(long, default_value_t = 8)]
    pub classes: usize,
    /// Timed iterations per measurement.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed warm-up iterations (kernel compilation, autotuning, allocator growth).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Comma-separated measurements: forward (inference), backward (forward + backward of a
    /// cross-entropy loss), step (+ AdamW), mimic (the MIMIC fine-tuning step: two views,
    /// mixing, projection head, CE + MSCL, layer-decay AdamW), mae (the MAE pre-training step),
    /// latency (inference ms per image at batch 1 and at --batch), scaling (step images/s over
    /// batch sizes and token counts), pipeline (decode + two-view augmentation on --data).
    #[arg(long, default_value = "forward,backward,step")]
    pub only: String,
    /// FERPlus root for the pipeline measurement.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Loader threads for the pipeline measurement.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Shards of the MIMIC and MAE steps, each on its own thread (default: one per core on the
    /// CPU, 1 on a GPU; see `finetune --shards`).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Number format of the blocks' matrix products: f32, or bf16 (mixed precision: bf16
    /// products, f32 weights, norms and losses; for CUDA).
    #[arg(long, default_value = "f32", value_parser = Precision::parse)]
    pub precision: Precision,
    /// Also print all figures as one JSON line (last line of the output).
    #[arg(long)]
    pub json: bool,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// Checks the arguments, then measures on the chosen backend.
pub fn run(args: Args) -> Result<()> {
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    for part in args.parts() {
        if !PARTS.contains(&part) {
            bail!(
                "--only: unknown measurement '{part}' (known: {})",
                PARTS.join(", ")
            );
        }
    }
    if args.parts().contains(&"pipeline") && args.data.is_none() {
        bail!("--only pipeline needs --data <FERPlus root>");
    }
    let device = args.device;
    dispatch(device, args)
}

/// One measured figure.
struct Figure {
    name: String,
    images_per_s: f64,
    peak_mib: Option<f64>,
}

impl Job for Args {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, backend: &str) -> Result<()> {
        let config = VitConfig::preset(&self.model)?.with_n_classes(self.classes);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = crate::backend::resolve_shards(self.shards, backend)?;
        crate::backend::check_precision(self.precision, backend)?;
        println!(
            "bench {} ({:.2} M parameters, {} tokens) batch {} on {backend}, {threads} threads, \
             {shards} shard(s) per training step, {} matrix products",
            self.model,
            config.init::<B>(&device)?.num_params() as f64 / 1e6,
            config.n_patches() + 1,
            self.batch,
            self.precision.name(),
        );
        let mut figures: Vec<Figure> = Vec::new();
        for part in self.parts() {
            match part {
                "forward" => report(
                    &mut figures,
                    self.forward::<B>(&config, self.batch, &device)?,
                ),
                "backward" => report(
                    &mut figures,
                    self.ce_step::<B>(&config, self.batch, false, &device)?,
                ),
                "step" => report(
                    &mut figures,
                    self.ce_step::<B>(&config, self.batch, true, &device)?,
                ),
                "mimic" => report(
                    &mut figures,
                    self.mimic_step::<B>(&config, &device, shards)?,
                ),
                "mae" => report(&mut figures, self.mae_step::<B>(&device, shards)?),
                "latency" => {
                    for batch in [1, self.batch] {
                        let mut f = self.forward::<B>(&config, batch, &device)?;
                        let ms = 1000.0 / f.images_per_s;
                        println!("latency batch {batch:<4}         {ms:>9.2} ms/image");
                        f.name = format!("latency_b{batch}");
                        figures.push(f);
                    }
                }
                "scaling" => {
                    for batch in [8, 16, 32, 64] {
                        let mut f = self.ce_step::<B>(&config, batch, true, &device)?;
                        f.name = format!("step_batch{batch}");
                        report(&mut figures, f);
                    }
                    let p = config.patch_size;
                    for grid in [4, 6, 8, 10] {
                        let sized = VitConfig {
                            img_size: grid * p,
                            ..config.clone()
                        };
                        let mut f = self.ce_step::<B>(&sized, self.batch, true, &device)?;
                        f.name = format!("step_tokens{}", grid * grid + 1);
                        report(&mut figures, f);
                    }
                }
                "pipeline" => {
                    for f in self.pipeline(config.img_size)? {
                        report(&mut figures, f);
                    }
                }
                _ => unreachable!("parts are checked in run"),
            }
        }
        if self.json {
            let map: serde_json::Map<String, serde_json::Value> = figures
                .iter()
                .map(|f| {
                    let v =
                        serde_json::json!({"images_per_s": f.images_per_s, "peak_mib": f.peak_mib});
                    (f.name.clone(), v)
                })
                .collect();
            let line = serde_json::json!({
                "model": self.model, "batch": self.batch, "backend": backend,
                "threads": threads, "shards": shards, "precision": self.precision.name(),
                "figures": map,
            });
            println!("{line}");
        }
        Ok(())
    }
}

impl Args {
    fn parts(&self) -> Vec<&str> {
        self.only
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Runs `f` warmup + steps times; returns images/s over the timed steps (`per_step`
    /// images each) and the peak resident memory of the process while they ran.
    fn measure<B: Backend>(
        &self,
        name: &str,
        per_step: usize,
        device: &B::Device,
        mut f: impl FnMut(),
    ) -> Figure {
        for _ in 0..self.warmup {
            f();
        }
        let _ = B::sync(device);
        reset_peak_rss();
        let start = Instant::now();
        for _ in 0..self.steps {
            f();
        }
        let _ = B::sync(device);
        let secs = start.elapsed().as_secs_f64();
        Figure {
            name: name.to_string(),
            images_per_s: (self.steps * per_step) as f64 / secs,
            peak_mib: peak_rss_mib(),
        }
    }

    /// Inference on the inner backend (no autodiff graph).
    fn forward<B: AutodiffBackend>(
        &self,
        config: &VitConfig,
        batch: usize,
        device: &B::Device,
    ) -> Result<Figure> {
        let model = config
            .init::<B>(device)?
            .with_precision(self.precision)
            .valid();
        let s = config.img_size;
        let images = Tensor::<B::InnerBackend, 4>::random(
            [batch, 3, s, s],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        Ok(
            self.measure::<B::InnerBackend>("forward", batch, device, || {
                let _ = model.forward(images.clone()).into_data();
            }),
        )
    }

    /// Forward + backward of a cross-entropy loss, with an AdamW update when `update`.
    fn ce_step<B: AutodiffBackend>(
        &self,
        config: &VitConfig,
        batch: usize,
        update: bool,
        device: &B::Device,
    ) -> Result<Figure> {
        let mut model = config.init::<B>(device)?.with_precision(self.precision);
        let s = config.img_size;
        let images =
            Tensor::<B, 4>::random([batch, 3, s, s], Distribution::Normal(0.0, 1.0), device);
        let targets = one_hot::<B>(batch, self.classes, device);
        let loss_of = |m: &mimic_core::model::Vit<B>| {
            let logp = log_softmax(m.forward(images.clone()), 1);
            (logp * targets.clone())
                .sum()
                .neg()
                .div_scalar(batch as f64)
        };
        if !update {
            return Ok(self.measure::<B>("forward+backward", batch, device, || {
                drop(loss_of(&model).backward());
            }));
        }
        let mut optim = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.05)
            .init();
        Ok(self.measure::<B>("optimizer step", batch, device, || {
            let grads = GradientsParams::from_grads(loss_of(&model).backward(), &model);
            model = optim.step(1e-4, model.clone(), grads);
        }))
    }

    /// The MIMIC fine-tuning step as `finetune` runs it: `batch` images, two views each, a
    /// mixing plan, CE + MSCL through the dense projection head, the grouped AdamW.
    /// Images/s counts source images (each contributes two views).
    fn mimic_step<B: AutodiffBackend>(
        &self,
        config: &VitConfig,
        device: &B::Device,
        shards: usize,
    ) -> Result<Figure> {
        let encoder = config.init::<B>(device)?.with_precision(self.precision);
        let proj = ProjectionHead::new(ProjKind::Dense, config.d_model, 128, device);
        let mut model = MimicModel { encoder, proj };
        let opt = OptimizerConfig {
            kind: OptimKind::AdamW,
            weight_decay: 0.05,
            layer_decay: 1.0,
            ..OptimizerConfig::default()
        };
        let mut optim = GroupedOptimizer::new(&opt, &mut model, config.depth)?;
        let (n, s) = (2 * self.batch, config.img_size);
        let images = Tensor::<B, 4>::random([n, 3, s, s], Distribution::Normal(0.0, 1.0), device);
        let targets: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let mut t = vec![0.0; self.classes];
                t[(i % self.batch) % self.classes] = 1.0;
                t
            })
            .collect();
        let loss = MimicLossConfig::default();
        let mix = MixConfig::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut seed = 0;
        Ok(self.measure::<B>("mimic step", self.batch, device, || {
            let plan = mix.sample(&mut rng, s, s);
            seed += 1;
            let step = finetune_gradients(
                &model,
                images.clone(),
                &targets,
                Some(&plan),
                &loss,
                shards,
                seed,
            );
            model = optim.step_params(1e-4, model.clone(), step.grads);
        }))
    }

    /// The MAE step as `pretrain` runs it: masking on the host, encoder on the kept quarter,
    /// decoder, norm-pix loss, AdamW (0.9, 0.95).
    fn mae_step<B: AutodiffBackend>(&self, device: &B::Device, shards: usize) -> Result<Figure> {
        let config = MaeConfig::for_preset(&self.model)?;
        let mut model = config.init::<B>(device)?.with_precision(self.precision);
        let opt = OptimizerConfig {
            kind: OptimKind::AdamW,
            weight_decay: 0.05,
            beta2: 0.95,
            layer_decay: 1.0,
            ..OptimizerConfig::default()
        };
        let mut optim = GroupedOptimizer::new(&opt, &mut model, config.encoder.depth)?;
        let s = config.encoder.img_size;
        let images = Tensor::<B, 4>::random(
            [self.batch, 3, s, s],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        Ok(self.measure::<B>("mae step", self.batch, device, || {
            let masking = model.random_masking(&mut rng, self.batch);
            let (_, grads) = mae_gradients(&model, images.clone(), &masking, shards);
            model = optim.step_params(1e-4, model.clone(), grads);
        }))
    }

    /// Decoding FERPlus train images, and rendering two-view augmented batches from the
    /// decoded images on `workers` threads (what the training step consumes).
    fn pipeline(&self, size: usize) -> Result<Vec<Figure>> {
        let root = self.data.as_ref().expect("checked in run");
        let split = load_split(DatasetKind::FerPlus, root, "train", &LoadOptions::default())
            .with_context(|| format!("--data {}", root.display()))?;
        let start = Instant::now();
        let images = decode_all(&split.samples, self.workers)?;
        let decode = Figure {
            name: "pipeline decode".into(),
            images_per_s: images.len() as f64 / start.elapsed().as_secs_f64(),
            peak_mib: peak_rss_mib(),
        };
        let n = images.len();
        let source = Arc::new(BatchSource {
            targets: Arc::new(split.samples.iter().map(|s| s.target.clone()).collect()),
            images: Arc::new(images),
            augment: AugmentConfig::default(),
            size,
            views: 2,
        });
        let batches: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(self.batch)
            .map(|c| c.to_vec())
            .collect();
        let start = Instant::now();
        let mut rendered = 0;
        for batch in EpochBatches::start(source, batches, 0, self.workers) {
            rendered += batch.n;
        }
        let augment = Figure {
            name: "pipeline two-view batches".into(),
            images_per_s: rendered as f64 / start.elapsed().as_secs_f64(),
            peak_mib: peak_rss_mib(),
        };
        Ok(vec![decode, augment])
    }
}

/// Prints a figure and keeps it for the JSON line.
fn report(figures: &mut Vec<Figure>, f: Figure) {
    let mem = f
        .peak_mib
        .map_or("n/a".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "{:<26} {:>9.1} images/s   peak RSS {mem}",
        f.name, f.images_per_s
    );
    figures.push(f);
}

fn one_hot<B: Backend>(batch: usize, classes: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut v = vec![0f32; batch * classes];
    for i in 0..batch {
        v[i * classes + i % classes] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [batch, classes]), device)
}

/// Resets the kernel's peak-RSS counter of this process (Linux; a no-op elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
