use std::time::Instant;

use anyhow::{bail, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use mimic_core::model::VitConfig;

use crate::backend::{dispatch, DeviceKind, Job};

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
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// Prints images/s and peak memory for inference, forward+backward and a full AdamW step.
pub fn run(args: Args) -> Result<()> {
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let device = args.device;
    dispatch(device, args)
}

impl Job for Args {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, backend: &str) -> Result<()> {
        let config = VitConfig::preset(&self.model)?.with_n_classes(self.classes);
        let model = config.init::<B>(&device)?;
        let n_params: usize = model.num_params();
        let s = config.img_size;
        println!(
            "bench {} ({:.2} M parameters, {} tokens) batch {} on {backend}, {} threads",
            self.model,
            n_params as f64 / 1e6,
            config.n_patches() + 1,
            self.batch,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );

        let images = Tensor::<B, 4>::random(
            [self.batch, 3, s, s],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let targets = one_hot::<B>(self.batch, self.classes, &device);
        let loss_of = |m: &mimic_core::model::Vit<B>| {
            let logp = log_softmax(m.forward(images.clone()), 1);
            (logp * targets.clone())
                .sum()
                .neg()
                .div_scalar(self.batch as f64)
        };

        // Inference on the inner backend: no autodiff graph.
        let eval = model.valid();
        let eval_images = images.clone().inner();
        let forward = self.measure::<B::InnerBackend>(&device, || {
            let _ = eval.forward(eval_images.clone()).into_data();
        });

        let backward = self.measure::<B>(&device, || {
            let grads = loss_of(&model).backward();
            drop(grads);
        });

        let mut optim = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.05)
            .init();
        let mut model = model;
        let step = self.measure::<B>(&device, || {
            let grads = GradientsParams::from_grads(loss_of(&model).backward(), &model);
            model = optim.step(1e-4, model.clone(), grads);
        });

        for (what, (ips, peak)) in [
            ("forward", forward),
            ("forward+backward", backward),
            ("optimizer step", step),
        ] {
            let mem = peak.map_or("n/a".to_string(), |m| format!("{m:.0} MiB"));
            println!("{what:<18} {ips:>9.1} images/s   peak RSS {mem}");
        }
        Ok(())
    }
}

impl Args {
    /// Runs `f` warmup + steps times; returns images/s over the timed steps and the peak
    /// resident memory of the process while they ran.
    fn measure<B: Backend>(&self, device: &B::Device, mut f: impl FnMut()) -> (f64, Option<f64>) {
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
        ((self.steps * self.batch) as f64 / secs, peak_rss_mib())
    }
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
