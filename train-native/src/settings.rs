//! `finetune` settings: a recipe preset, overridden by a TOML file, overridden by flags —
//! parsed into plain optional values first, then resolved and validated in one place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mimic_core::augment::AugmentConfig;
use mimic_core::data::{DatasetKind, FerPlusMode};
use mimic_core::mix::{LabelMetric, MixConfig};
use mimic_core::model::{Pool, Precision, VitConfig};
use mimic_core::train::{LossKind, MimicLossConfig, OptimKind, OptimizerConfig, ProjKind};
use serde::{Deserialize, Serialize};

/// Every `finetune` setting as an optional value: the same struct is read from the TOML file
/// (unknown keys are an error) and from the command line.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FinetuneFlags {
    /// Continue the interrupted run in this directory from its last complete epoch, with its
    /// saved settings (bit-identical to an uninterrupted run on the CPU backend).
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// TOML file with any of these settings (keys as the flag names); flags override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Recipe: `cpu` (trains on 2 cores), `sample` (cpu, shortened for the shipped sample; the
    /// default without --data) or `paper-vit-b16` (the paper's recipe).
    #[arg(long)]
    pub preset: Option<String>,
    /// Model preset (see `train-native presets`).
    #[arg(long)]
    pub model: Option<String>,
    /// Data set: ferplus, rafdb, affectnet7, affectnet8, fer2013, folder.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Data set root. Default: the FERPlus sample shipped in assets/.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Initial weights: our MAE / fine-tuned checkpoint or an official MAE / timm file.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Run directory. Default: runs/finetune-<UTC time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimisation steps (for smoke tests); the schedule still spans
    /// the configured epochs.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Images per batch (each contributes two views).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate of the cosine schedule.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Epochs of linear warm-up.
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// adam (coupled L2, the paper) or adamw.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Weight decay (not on 1-D parameters, pos_embed, cls_token).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Layer-wise lr decay (1 = off).
    #[arg(long)]
    pub layer_decay: Option<f64>,
    /// Adam epsilon.
    #[arg(long)]
    pub eps: Option<f32>,
    /// Clip each gradient tensor to this L2 norm.
    #[arg(long)]
    pub clip_grad: Option<f32>,
    /// Objective: ce, scl or mscl.
    #[arg(long)]
    pub loss: Option<String>,
    /// Projection head: none, linear or dense.
    #[arg(long)]
    pub proj: Option<String>,
    /// Projection dimension.
    #[arg(long)]
    pub proj_dim: Option<usize>,
    /// Pooling: gap or cls.
    #[arg(long)]
    pub pool: Option<String>,
    /// Weight of the contrastive loss.
    #[arg(long)]
    pub lambda_c: Option<f64>,
    /// Contrastive temperature.
    #[arg(long)]
    pub tau: Option<f64>,
    /// Positive threshold on the soft-label distance (inclusive).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Soft-label distance: linf or l1.
    #[arg(long)]
    pub metric: Option<String>,
    /// Label smoothing of the cross-entropy target.
    #[arg(long)]
    pub smoothing: Option<f32>,
    /// Mix the batches (Mixup / CutMix). Default: on for mscl, off for ce and scl.
    #[arg(long)]
    pub mix: Option<bool>,
    /// α of the Beta(α, β) mixing distribution.
    #[arg(long)]
    pub mix_alpha: Option<f64>,
    /// β of the Beta(α, β) mixing distribution.
    #[arg(long)]
    pub mix_beta: Option<f64>,
    /// Probability of CutMix instead of Mixup per batch.
    #[arg(long)]
    pub cutmix_prob: Option<f64>,
    /// Smallest random-resized-crop area share.
    #[arg(long)]
    pub crop_scale: Option<f64>,
    /// Colour jitter strength (0 = off).
    #[arg(long)]
    pub jitter: Option<f32>,
    /// Stochastic depth rate of the last block.
    #[arg(long)]
    pub drop_path: Option<f64>,
    /// FERPlus labels: majority or soft (vote distribution).
    #[arg(long)]
    pub ferplus_mode: Option<String>,
    /// Drop validation / test images identical to a training image.
    #[arg(long)]
    pub dedup: Option<bool>,
    /// Sample ids to leave out (repeatable), e.g. a known mislabelled image.
    #[arg(long)]
    pub exclude: Option<Vec<String>>,
    /// Random seed (initialisation, augmentation, mixing, data order).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data-loading threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Split each batch's encoder pass into N shards on their own threads (default: one per
    /// core on the CPU, up to 8; 1 on a GPU). The gradients are the unsharded ones up to
    /// rounding; stochastic depth draws per shard, so runs repeat exactly at the same N.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Number format of the encoder's matrix products: f32, or bf16 (mixed precision: bf16
    /// products, f32 weights, gradients, norms and losses; pays off on CUDA).
    #[arg(long)]
    pub precision: Option<String>,
    /// Write a metrics line every N steps.
    #[arg(long)]
    pub log_every: Option<usize>,
}

/// The resolved settings of a run, written to `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Recipe preset the defaults came from.
    pub preset: String,
    /// Model preset name.
    pub model_preset: String,
    /// The full model configuration.
    pub model: VitConfig,
    /// Data set name.
    pub dataset: String,
    /// Data set root.
    pub data: PathBuf,
    /// Initial weights.
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
    /// Loss.
    pub loss: MimicLossConfig,
    /// Projection head kind.
    pub proj: ProjKind,
    /// Projection dimension.
    pub proj_dim: usize,
    /// Mixing (None = off).
    pub mix: Option<MixConfig>,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// FERPlus label mode.
    pub ferplus_soft: bool,
    /// De-duplicate held-out splits against train.
    pub dedup: bool,
    /// Excluded sample ids.
    pub exclude: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// Loader threads.
    pub workers: usize,
    /// Encoder shards per step (absent in configs from before shards, or not yet resolved for
    /// the device).
    #[serde(default)]
    pub shards: Option<usize>,
    /// Number format of the encoder's matrix products (absent in configs from before it: f32).
    #[serde(default)]
    pub precision: Precision,
    /// Metrics interval in steps.
    pub log_every: usize,
    /// Continue the run in `out` (set by `--resume`; not part of config.json).
    #[serde(skip)]
    pub resume: bool,
}

impl FinetuneFlags {
    /// `self` with every value that `over` sets replaced.
    pub fn overridden_by(self, over: FinetuneFlags) -> FinetuneFlags {
        macro_rules! pick {
            ($($f:ident),*) => { FinetuneFlags { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            resume,
            config,
            preset,
            model,
            dataset,
            data,
            init,
            out,
            epochs,
            max_steps,
            batch,
            lr,
            min_lr,
            warmup_epochs,
            optimizer,
            weight_decay,
            layer_decay,
            eps,
            clip_grad,
            loss,
            proj,
            proj_dim,
            pool,
            lambda_c,
            tau,
            threshold,
            metric,
            smoothing,
            mix,
            mix_alpha,
            mix_beta,
            cutmix_prob,
            crop_scale,
            jitter,
            drop_path,
            ferplus_mode,
            dedup,
            exclude,
            seed,
            workers,
            shards,
            precision,
            log_every
        )
    }

    /// The defaults of a recipe preset.
    fn preset(name: &str) -> Result<FinetuneFlags> {
        let f = FinetuneFlags::default();
        Ok(match name {
            // Trains from scratch on 2 CPU cores: a small ViT on 48 px faces, AdamW and no
            // layer decay (there is nothing pre-trained to protect).
            "cpu" => FinetuneFlags {
                model: Some("vit_cpu_patch6_48".into()),
                epochs: Some(30),
                batch: Some(64),
                lr: Some(1e-3),
                min_lr: Some(1e-5),
                warmup_epochs: Some(2.0),
                optimizer: Some("adamw".into()),
                weight_decay: Some(0.05),
                layer_decay: Some(1.0),
                proj_dim: Some(128),
                drop_path: Some(0.1),
                ..f
            },
            // The CPU recipe cut to a few minutes for the embedded FERPlus sample.
            "sample" => FinetuneFlags {
                epochs: Some(5),
                warmup_epochs: Some(0.5),
                ..FinetuneFlags::preset("cpu")?
            },
            // MIMIC §IV-A: ViT-B/16 at 224 px, Adam, lr 1e-4, wd 5e-4, layer decay 0.65, batch
            // 64, 50 epochs, projection 512 (FERPlus; the paper uses 128 for RAF-DB).
            "paper-vit-b16" => FinetuneFlags {
                model: Some("vit_base_patch16_224".into()),
                epochs: Some(50),
                batch: Some(64),
                lr: Some(1e-4),
                min_lr: Some(1e-6),
                warmup_epochs: Some(5.0),
                optimizer: Some("adam".into()),
                weight_decay: Some(5e-4),
                layer_decay: Some(0.65),
                proj_dim: Some(512),
                drop_path: Some(0.1),
                ..f
            },
            other => {
                bail!("--preset: unknown recipe '{other}' (known: cpu, sample, paper-vit-b16)")
            }
        })
    }

    /// Resolves preset < file < flags into a validated configuration.
    pub fn resolve(self, default_data: &Path, now: &str) -> Result<FinetuneConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FinetuneFlags>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FinetuneFlags::default(),
        };
        let chosen = file.clone().overridden_by(self.clone());
        // With neither data nor a recipe named, the run is the out-of-the-box demo on the
        // shipped sample: the CPU recipe, shortened to finish in minutes.
        let default_recipe = if chosen.data.is_none() {
            "sample"
        } else {
            "cpu"
        };
        let preset_name = chosen
            .preset
            .clone()
            .unwrap_or_else(|| default_recipe.into());
        let user_warmup = chosen.warmup_epochs.is_some();
        let model_chosen = chosen.model.is_some();
        let mut f = FinetuneFlags::preset(&preset_name)?.overridden_by(chosen);
        if !user_warmup {
            // The recipe's warm-up is a default: shorten it for runs of fewer epochs.
            f.warmup_epochs = f
                .warmup_epochs
                .map(|w| w.min(f.epochs.unwrap_or(1) as f64 / 4.0));
        }

        let dataset = f.dataset.clone().unwrap_or_else(|| "ferplus".into());
        let kind = DatasetKind::parse(&dataset)?;
        let n_classes = kind.classes().map(|c| c.len()).unwrap_or(0);
        // Without --model, a mimic checkpoint given to --init brings its own architecture.
        let stored = match (&f.init, model_chosen) {
            (Some(init), false) => stored_architecture(init)?,
            _ => None,
        };
        let (model_preset, base) = match stored {
            Some(config) => ("from --init".to_string(), config),
            None => {
                let name = f.model.clone().expect("every recipe names a model");
                let config = VitConfig::preset(&name)?;
                (name, config)
            }
        };
        let pool = Pool::parse(f.pool.as_deref().unwrap_or("gap"))?;
        let model = base
            .with_fixed_pos_embed(false)
            .with_n_classes(n_classes)
            .with_pool(pool)
            .with_drop_path(f.drop_path.unwrap_or(0.0));
        model.validate().context("--model / --drop-path")?;

        let loss_kind = LossKind::parse(f.loss.as_deref().unwrap_or("mscl"))?;
        let defaults = MimicLossConfig::default();
        let loss = MimicLossConfig {
            loss: loss_kind,
            lambda_c: f.lambda_c.unwrap_or(defaults.lambda_c),
            tau: f.tau.unwrap_or(defaults.tau),
            threshold: f.threshold.unwrap_or(defaults.threshold),
            metric: LabelMetric::parse(f.metric.as_deref().unwrap_or("linf"))?,
            smoothing: f.smoothing.unwrap_or(0.0),
        };
        loss.validate().context("loss settings")?;

        let mix_on = f.mix.unwrap_or(loss_kind == LossKind::Mscl);
        let md = MixConfig::default();
        let mix = mix_on.then(|| MixConfig {
            alpha: f.mix_alpha.unwrap_or(md.alpha),
            beta: f.mix_beta.unwrap_or(md.beta),
            cutmix_prob: f.cutmix_prob.unwrap_or(md.cutmix_prob),
        });
        if let Some(m) = &mix {
            m.validate()
                .context("--mix-alpha / --mix-beta / --cutmix-prob")?;
        }

        let od = OptimizerConfig::default();
        let optimizer = OptimizerConfig {
            kind: match f.optimizer.as_deref().unwrap_or("adam") {
                "adam" => OptimKind::Adam,
                "adamw" => OptimKind::AdamW,
                o => bail!("--optimizer: unknown optimiser '{o}' (adam or adamw)"),
            },
            weight_decay: f.weight_decay.unwrap_or(od.weight_decay),
            eps: f.eps.unwrap_or(od.eps),
            layer_decay: f.layer_decay.unwrap_or(od.layer_decay),
            clip_grad: f.clip_grad,
            ..od
        };
        optimizer.validate().context("optimiser settings")?;

        let augment = AugmentConfig {
            scale_min: f.crop_scale.unwrap_or(AugmentConfig::default().scale_min),
            jitter: f.jitter.unwrap_or(0.0),
            ..AugmentConfig::default()
        };
        augment.validate().context("--crop-scale / --jitter")?;

        let ferplus_soft = match f.ferplus_mode.as_deref().unwrap_or("majority") {
            "majority" => false,
            "soft" => true,
            o => bail!("--ferplus-mode: unknown mode '{o}' (majority or soft)"),
        };

        let config = FinetuneConfig {
            preset: preset_name,
            model_preset,
            model,
            dataset,
            data: f.data.clone().unwrap_or_else(|| default_data.to_path_buf()),
            init: f.init.clone(),
            out: f
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/finetune-{now}"))),
            epochs: f.epochs.expect("every recipe sets epochs"),
            max_steps: f.max_steps,
            batch: f.batch.expect("every recipe sets batch"),
            lr: f.lr.expect("every recipe sets lr"),
            min_lr: f.min_lr.unwrap_or(0.0),
            warmup_epochs: f.warmup_epochs.unwrap_or(0.0),
            optimizer,
            loss,
            proj: ProjKind::parse(f.proj.as_deref().unwrap_or("dense"))?,
            proj_dim: f.proj_dim.expect("every recipe sets proj-dim"),
            mix,
            augment,
            ferplus_soft,
            dedup: f.dedup.unwrap_or(true),
            exclude: f.exclude.clone().unwrap_or_default(),
            seed: f.seed.unwrap_or(0),
            workers: f.workers.unwrap_or(2),
            shards: f.shards,
            precision: Precision::parse(f.precision.as_deref().unwrap_or("f32"))
                .map_err(|e| anyhow::anyhow!("--precision: {e}"))?,
            log_every: f.log_every.unwrap_or(20),
            resume: false,
        };
        config.check()?;
        Ok(config)
    }
}

/// The encoder architecture stored in a mimic checkpoint (metadata key `mimic.model`, read
/// from the header only); `None` for files without it (timm / MAE releases, `.pth`).
fn stored_architecture(path: &Path) -> Result<Option<VitConfig>> {
    let metadata = mimic_core::weights::TensorMap::read_metadata(path)
        .with_context(|| format!("--init {}", path.display()))?;
    match metadata.get(mimic_core::weights::CONFIG_KEY) {
        Some(json) => serde_json::from_str::<VitConfig>(json)
            .map(Some)
            .with_context(|| format!("--init {}: bad model metadata", path.display())),
        None => Ok(None),
    }
}

impl FinetuneConfig {
    fn check(&self) -> Result<()> {
        if self.epochs == 0 || self.batch == 0 || self.workers == 0 || self.log_every == 0 {
            bail!("--epochs, --batch, --workers and --log-every must be at least 1");
        }
        if self.shards == Some(0) {
            bail!("--shards must be at least 1");
        }
        if self.max_steps == Some(0) {
            bail!("--max-steps must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 || self.min_lr > self.lr {
            bail!(
                "--lr must be positive and --min-lr in [0, lr] (got {} and {})",
                self.lr,
                self.min_lr
            );
        }
        if self.warmup_epochs < 0.0 || self.warmup_epochs > self.epochs as f64 {
            bail!(
                "--warmup-epochs {} must be in [0, epochs]",
                self.warmup_epochs
            );
        }
        if self.proj_dim == 0 {
            bail!("--proj-dim must be at least 1");
        }
        if self.model.n_classes == 0 && self.dataset != "folder" {
            bail!("data set {} has no classes", self.dataset);
        }
        Ok(())
    }

    /// The FERPlus label mode of the loader.
    pub fn ferplus_mode(&self) -> FerPlusMode {
        if self.ferplus_soft {
            FerPlusMode::Soft
        } else {
            FerPlusMode::Majority
        }
    }
}
