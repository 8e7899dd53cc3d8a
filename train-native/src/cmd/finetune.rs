use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use mimic_core::backend::AutodiffBackend;
use mimic_core::data::{DatasetKind, LoadOptions};
use mimic_core::train::{
    finetune_gradients, CosineSchedule, GroupedOptimizer, MimicModel, ProjectionHead, StepGradients,
};
use mimic_core::weights::{
    assign_stable_ids, first_non_finite, load_into, load_vit, LoadPolicy, TensorMap,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::backend::{dispatch, DeviceKind, Job};
use crate::pipeline::{self, BatchSource, EpochBatches};
use crate::progress::Progress;
use crate::resume::{self, ResumeState};
use crate::run::{evaluate, metrics_json, non_finite, write_json, CheckpointMeta, RunDir};
use crate::settings::{FinetuneConfig, FinetuneFlags};

/// The FERPlus sample shipped with the repository: the default data of `finetune`.
pub const SAMPLE_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/ferplus-sample");

/// Arguments of `finetune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    flags: FinetuneFlags,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    device: DeviceKind,
}

/// Resolves the settings, then trains on the chosen backend.
pub fn run(args: Args) -> Result<()> {
    let config = match &args.flags.resume {
        Some(dir) => resumed_config(dir, &args.flags)?,
        None => args
            .flags
            .resolve(&PathBuf::from(SAMPLE_DATA), &utc_stamp())?,
    };
    dispatch(args.device, config).map(|_| ())
}

/// The settings of the interrupted run in `dir`; other settings flags are refused, since
/// changing them would not continue the same run.
fn resumed_config(dir: &Path, flags: &FinetuneFlags) -> Result<FinetuneConfig> {
    let only_resume = FinetuneFlags {
        resume: flags.resume.clone(),
        ..FinetuneFlags::default()
    };
    if *flags != only_resume {
        bail!(
            "--resume takes every setting from {}; pass no other settings (only --device)",
            dir.join("config.json").display()
        );
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--resume {}: cannot read {}", dir.display(), path.display()))?;
    let mut config: FinetuneConfig = serde_json::from_str(&text)
        .with_context(|| format!("--resume: {} is not a finetune config", path.display()))?;
    config.out = dir.to_path_buf();
    config.resume = true;
    Ok(config)
}

/// `YYYYmmdd-HHMMSS` in UTC, for default run names.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The headline figures of a finished run.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    /// Validation accuracy of the best checkpoint.
    pub val_accuracy: f64,
    /// Test accuracy of the best checkpoint, when the data set has a separate test split.
    pub test_accuracy: Option<f64>,
    /// Training time in seconds.
    pub train_seconds: f64,
}

impl Job for FinetuneConfig {
    type Output = RunSummary;

    fn run<B: AutodiffBackend>(mut self, device: B::Device, backend: &str) -> Result<RunSummary> {
        let started = Instant::now();
        let kind = DatasetKind::parse(&self.dataset)?;
        // The resolved count goes into config.json: a resumed run keeps it (the step's
        // stochastic-depth draws depend on it) on any machine.
        let shards = crate::backend::resolve_shards(self.shards, backend)?;
        self.shards = Some(shards);
        crate::backend::check_precision(self.precision, backend)?;
        if self.data.as_os_str() == SAMPLE_DATA && !self.data.exists() {
            bail!(
                "the embedded sample {} is missing; pass --data <dir>",
                self.data.display()
            );
        }

        // 1. Data: train, a validation split for model selection, and the test split.
        let options = LoadOptions {
            ferplus_mode: self.ferplus_mode(),
            exclude: self.exclude.clone(),
        };
        let splits = kind.splits();
        let load = |name: &str| pipeline::load(kind, &self.data, name, &options, self.workers);
        let train = load("train")?;
        let val_name = if splits.contains(&"valid") {
            "valid"
        } else {
            "test"
        };
        if val_name == "test" {
            eprintln!("warning: {kind} has no validation split; selecting the best epoch on test");
        }
        let mut val = load(val_name)?;
        let mut test = match splits.contains(&"test") && val_name != "test" {
            true => Some(load("test")?),
            false => None,
        };
        train.split.ensure_same_classes(&val.split)?;
        if let Some(t) = &test {
            train.split.ensure_same_classes(&t.split)?;
        }
        if self.dedup {
            for held in std::iter::once(&mut val).chain(test.as_mut()) {
                let dropped = pipeline::dedup(held, &train);
                if held.images.is_empty() {
                    bail!(
                        "the {} split is empty after dropping {dropped} images identical to \
                         training images (--dedup); nothing is left to evaluate on",
                        held.split.split
                    );
                }
            }
        }
        for s in std::iter::once(&train).chain([&val]).chain(test.as_ref()) {
            println!("{}", s.split.report());
        }
        let labels = train.split.classes.clone();
        if self.model.n_classes == 0 {
            self.model = self.model.clone().with_n_classes(labels.len());
        }

        // 2. Model: fresh, or initialised from a checkpoint with the expected keys reported, or
        //    the state of an interrupted run.
        let resume_point = match self.resume {
            true => Some(resume::load(&self.out)?),
            false => None,
        };
        B::seed(&device, self.seed);
        let encoder = match (&self.init, &resume_point) {
            (None, _) | (_, Some(_)) => self.model.init::<B>(&device)?,
            (Some(path), None) => {
                let map =
                    TensorMap::read(path).with_context(|| format!("--init {}", path.display()))?;
                let (model, report) =
                    load_vit::<B>(&self.model, map, &LoadPolicy::finetune_init(), &device)
                        .with_context(|| format!("--init {}", path.display()))?;
                println!("init {}: {report}", path.display());
                model
            }
        };
        let d = self.model.d_model;
        let proj = ProjectionHead::new(self.proj, d, self.proj_dim, &device);
        let encoder = encoder.with_precision(self.precision);
        let mut model = MimicModel { encoder, proj };
        if let Some(point) = &resume_point {
            let map = TensorMap::read(&point.model)?;
            load_into(&mut model, map, &LoadPolicy::strict(), &device)
                .with_context(|| format!("cannot resume from {}", point.model.display()))?;
        }
        assign_stable_ids(&mut model);
        let mut optim = GroupedOptimizer::new(&self.optimizer, &mut model, self.model.depth)?;
        if let Some(point) = &resume_point {
            optim = optim
                .load_state_bytes(&point.optimizer, &device)
                .with_context(|| format!("cannot resume {}", self.out.display()))?;
        }

        // 3. Schedule and the derived values, printed before training starts.
        let n_train = train.images.len();
        crate::backend::note_effective_sizes(self.batch, shards, n_train);
        let steps_per_epoch = n_train.div_ceil(self.batch);
        let total_steps = steps_per_epoch * self.epochs;
        let schedule = CosineSchedule {
            base_lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps,
        };
        let run_dir_path = self.out.clone();
        let mut run = match &resume_point {
            Some(point) => RunDir::reopen(&run_dir_path, point.state.metrics_len)?,
            None => RunDir::create(&run_dir_path, &self)?,
        };
        println!(
            "finetune {} on {backend}: {} ({:.2} M parameters), {} train images, batch {} x 2 views \
             in {shards} shard(s), {} matrix products, {} steps/epoch, {} epochs, lr {:.2e} (warm-up {} steps), loss {:?}, mixing {}",
            self.dataset,
            self.model_preset,
            burn::module::Module::num_params(&model) as f64 / 1e6,
            n_train,
            self.batch,
            self.precision.name(),
            steps_per_epoch,
            self.epochs,
            self.lr,
            schedule.warmup_steps,
            self.loss.loss,
            if self.mix.is_some() { "on" } else { "off" },
        );
        println!("run directory: {}", run.path.display());
        if let Some(point) = &resume_point {
            println!(
                "resuming after epoch {} (step {})",
                point.state.epoch, point.state.step
            );
        }

        let source = Arc::new(BatchSource {
            images: Arc::new(train.images),
            targets: Arc::new(
                train
                    .split
                    .samples
                    .iter()
                    .map(|s| s.target.clone())
                    .collect(),
            ),
            augment: self.augment.clone(),
            size: self.model.img_size,
            views: 2,
        });
        let val_labels = val.labels();
        let meta = |epoch: usize, acc: f64| CheckpointMeta {
            model: self.model.clone(),
            labels: labels.clone(),
            extra: HashMap::from([
                ("mimic.epoch".into(), epoch.to_string()),
                ("mimic.val_accuracy".into(), format!("{acc:.6}")),
            ]),
        };

        // 4. The epochs.
        let limit = self.max_steps.unwrap_or(usize::MAX).min(total_steps);
        let bar = Progress::new(limit);
        let (mut step, mut best, mut best_epoch) = (0usize, -1.0f64, 0usize);
        let (mut images_seen, mut first_epoch, mut secs_before) = (0usize, 0usize, 0.0);
        if let Some(point) = &resume_point {
            let s = &point.state;
            (step, best, best_epoch) = (s.step, s.best, s.best_epoch);
            (images_seen, first_epoch, secs_before) = (s.images_seen, s.epoch + 1, s.train_seconds);
            bar.set_position(step);
        }
        let train_start = Instant::now();
        for epoch in first_epoch..self.epochs {
            if step >= limit {
                break;
            }
            let (mut sum_loss, mut n_loss) = (0.0, 0usize);
            let mut window = (Instant::now(), 0usize);

            for batch in EpochBatches::epoch(&source, self.batch, self.seed, epoch, self.workers) {
                if step >= limit {
                    break; // a --max-steps run still validates and saves this epoch
                }
                let lr = schedule.lr(step);
                let n = 2 * batch.n;
                let s = self.model.img_size;
                let images =
                    Tensor::<B, 4>::from_data(TensorData::new(batch.pixels, [n, 3, s, s]), &device);
                let mut rng =
                    StdRng::seed_from_u64(self.seed ^ (step as u64).wrapping_mul(0x2545_F491));
                let plan = self.mix.as_ref().map(|m| m.sample(&mut rng, s, s));
                // Stochastic depth draws from generators seeded per step (and shard): the
                // step depends on the step number only (what resuming relies on).
                let drop_seed = self.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9);
                let StepGradients { losses, grads } = finetune_gradients(
                    &model,
                    images,
                    &batch.targets,
                    plan.as_ref(),
                    &self.loss,
                    shards,
                    drop_seed,
                );
                let value: f32 = losses.total.clone().into_scalar().elem();
                if !value.is_finite() {
                    bar.abandon();
                    let last_good = run.path.join("last.safetensors");
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
                    let ce: f32 = losses.ce.into_scalar().elem();
                    let con: Option<f32> = losses.contrastive.map(|c| c.into_scalar().elem());
                    run.log(serde_json::json!({
                        "step": step, "epoch": epoch, "loss": value, "ce": ce,
                        "contrastive": con, "lr": lr, "images_per_s": ips,
                    }))?;
                    bar.status(
                        format!("loss {value:.4}  lr {lr:.2e}  {ips:.1} img/s"),
                        format!(
                            "epoch {epoch:>3} step {step:>6}/{limit}  loss {value:.4}  ce {ce:.4}  lr {lr:.3e}  {ips:7.1} img/s"
                        ),
                    );
                    window = (Instant::now(), 0);
                }
            }

            // End of epoch: validate, checkpoint last and best.
            // A finite loss can still come with non-finite gradients: never save such weights.
            if let Some(name) = first_non_finite(&mut model) {
                bar.abandon();
                let last_good = run.path.join("last.safetensors");
                return Err(non_finite(
                    &format!("values in {name}"),
                    step,
                    epoch,
                    &last_good,
                ));
            }
            let eval_model = model.encoder.valid();
            let cm = evaluate(&eval_model, &val.images, &val_labels, 256, &device);
            let acc = cm.accuracy();
            run.save("last", &model, &meta(epoch, acc).to_map())?;
            if acc > best {
                best = acc;
                best_epoch = epoch;
                run.save("best", &model, &meta(epoch, acc).to_map())?;
            }
            let train_loss = sum_loss / n_loss.max(1) as f64;
            run.log(serde_json::json!({
                "epoch": epoch, "step": step, "train_loss": train_loss,
                "val_accuracy": acc, "val_mean_class_accuracy": cm.mean_class_accuracy(),
            }))?;
            let state = ResumeState {
                epoch,
                step,
                best,
                best_epoch,
                metrics_len: run.metrics_len()?,
                images_seen,
                train_seconds: secs_before + train_start.elapsed().as_secs_f64(),
            };
            resume::save(
                &run.path,
                &model,
                &meta(epoch, acc).to_map(),
                &optim,
                &state,
            )?;
            bar.line(format!(
                "epoch {epoch:>3}  train loss {train_loss:.4}  {val_name} accuracy {:.2} % (best {:.2} %)",
                100.0 * acc,
                100.0 * best
            ));
        }
        bar.finish();
        let train_secs = secs_before + train_start.elapsed().as_secs_f64();

        // 5. Final report on the best checkpoint.
        let best_path = run.path.join("best.safetensors");
        let classifier = crate::run::load_classifier::<B::InnerBackend>(&best_path, None, &device)?;
        let val_cm = evaluate(&classifier.model, &val.images, &val_labels, 256, &device);
        let test_json = test.as_ref().map(|t| {
            let cm = evaluate(&classifier.model, &t.images, &t.labels(), 256, &device);
            (cm.accuracy(), metrics_json(&cm, &labels))
        });
        let report = serde_json::json!({
            "dataset": self.dataset,
            "model": self.model_preset,
            "backend": backend,
            "shards": shards,
            "precision": self.precision.name(),
            "train_images": n_train,
            "steps": step,
            "best_epoch": best_epoch,
            "train_seconds": train_secs,
            "total_seconds": started.elapsed().as_secs_f64(),
            "images_per_s": images_seen as f64 / train_secs.max(1e-9),
            "validation": metrics_json(&val_cm, &labels),
            "test": test_json.as_ref().map(|t| t.1.clone()),
            "best_checkpoint": best_path,
        });
        write_json(&run.path.join("report.json"), &report)?;

        println!(
            "done in {:.0} s ({:.1} images/s): best {val_name} accuracy {:.2} % at epoch {best_epoch}",
            train_secs,
            images_seen as f64 / train_secs.max(1e-9),
            100.0 * val_cm.accuracy()
        );
        if let Some((acc, _)) = &test_json {
            println!(
                "held-out test accuracy {:.2} % ({} images)",
                100.0 * acc,
                test.as_ref().map_or(0, |t| t.images.len())
            );
        }
        println!("run written to {}", run.path.display());
        Ok(RunSummary {
            val_accuracy: val_cm.accuracy(),
            test_accuracy: test_json.map(|t| t.0),
            train_seconds: train_secs,
        })
    }
}
