//! `export-web`: a classifier checkpoint as the page's compact weights (f16 or int8) plus the
//! manifest the page reads first, checked by running both models on the same inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::activation::softmax;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use mimic_core::backend::{AutodiffBackend, Backend};
use mimic_core::model::Vit;
use mimic_core::weights::{
    compact_safetensors, fnv1a64, labels_of, load_vit, write_atomic, LoadPolicy, TensorMap,
    WebDtype, WebManifest, MANIFEST_FORMAT,
};
use rand::{Rng, SeedableRng};

use crate::backend::{dispatch, DeviceKind, Job};
use crate::run::checkpoint_config;

/// Arguments of `export-web`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A fine-tuned mimic checkpoint (e.g. `best.safetensors` of a run).
    #[arg(long)]
    pub weights: PathBuf,
    /// Model preset, needed only for checkpoints that do not record their configuration.
    #[arg(long)]
    pub model: Option<String>,
    /// Output folder: `model.safetensors` and `model.json` are written into it.
    #[arg(long)]
    pub out: PathBuf,
    /// Weight encoding: f16, or int8 (per-row scales; about half the size, less exact).
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    pub dtype: DtypeArg,
    /// The run's report.json, for the test accuracy shown on the page. Default: the
    /// report.json beside the weights, when there is one.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Backend for the check run.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// `--dtype` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DtypeArg {
    F16,
    Int8,
}

/// Random inputs on which the exported model is compared with the checkpoint.
const PROBES: usize = 8;

/// Writes the compact weights and manifest, then reloads them and reports how far their
/// probabilities are from the checkpoint's.
pub fn run(args: Args) -> Result<()> {
    dispatch(args.device, args)
}

impl Job for Args {
    type Output = ();

    fn run<AD: AutodiffBackend>(self, device: AD::Device, _backend: &str) -> Result<()> {
        export::<AD::InnerBackend>(&self, &device)
    }
}

fn export<B: Backend>(args: &Args, device: &B::Device) -> Result<()> {
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {}: exists and is not a folder", args.out.display());
    }
    let dtype = match args.dtype {
        DtypeArg::F16 => WebDtype::F16,
        DtypeArg::Int8 => WebDtype::Int8,
    };
    let map = TensorMap::read(&args.weights)
        .with_context(|| format!("cannot read weights {}", args.weights.display()))?;
    let config = checkpoint_config(&map, &args.weights, args.model.as_deref())?;
    if config.n_classes == 0 {
        bail!(
            "{}: the checkpoint has no classification head (head.weight); export a fine-tuned \
             checkpoint",
            args.weights.display()
        );
    }
    let labels = labels_of(&map, config.n_classes);
    let (accuracy, split) = reported_accuracy(args)?;

    // The checkpoint must load strictly before anything is written.
    let policy = LoadPolicy {
        allow_unused: vec!["proj_head.*".into()],
        ..LoadPolicy::strict()
    };
    let (reference, _) = load_vit::<B>(&config, map.clone(), &policy, device)
        .with_context(|| format!("cannot load {}", args.weights.display()))?;

    let keep = |name: &str| !name.starts_with("proj_head.");
    let bytes = compact_safetensors(&map, keep, dtype, &config, &labels)?;
    let manifest = WebManifest {
        format: MANIFEST_FORMAT,
        model: config.clone(),
        labels: labels.clone(),
        dtype,
        weights: "model.safetensors".into(),
        weights_bytes: bytes.len() as u64,
        weights_fnv64: format!("{:016x}", fnv1a64(&bytes)),
        test_accuracy: accuracy,
        test_split: split,
        source: args
            .weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };

    // Reload what will be written, as the page does, and compare it with the checkpoint.
    let compact = TensorMap::from_safetensors_bytes(&bytes, "exported weights")?;
    let (exported, _) = load_vit::<B>(&config, compact, &LoadPolicy::strict(), device)
        .context("the exported weights do not load back")?;
    let (max_diff, agree) = compare(&reference, &exported, device);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let weights_path = args.out.join(&manifest.weights);
    let manifest_path = args.out.join("model.json");
    write_atomic(&weights_path, &bytes)?;
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    write_atomic(&manifest_path, json.as_bytes())?;

    let source_bytes = std::fs::metadata(&args.weights).map_or(0, |m| m.len());
    println!(
        "wrote {} ({:.2} MB {}, from {:.2} MB) and {}",
        weights_path.display(),
        bytes.len() as f64 / 1e6,
        format!("{dtype:?}").to_lowercase(),
        source_bytes as f64 / 1e6,
        manifest_path.display()
    );
    println!(
        "check on {PROBES} random inputs: max |probability difference| {max_diff:.2e}, \
         same top class {agree}/{PROBES}"
    );
    match accuracy {
        Some(a) => println!("reported test accuracy {:.2} %", 100.0 * a),
        None => println!("no report.json found: the page will show no test accuracy"),
    }
    Ok(())
}

/// The test accuracy of the run that wrote the checkpoint: `--report`, else a `report.json`
/// beside the weights; `None` when neither exists or the run had no test split.
fn reported_accuracy(args: &Args) -> Result<(Option<f64>, Option<String>)> {
    let (path, given) = match &args.report {
        Some(p) => (p.clone(), true),
        None => (
            args.weights
                .parent()
                .unwrap_or(Path::new("."))
                .join("report.json"),
            false,
        ),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) if !given => return Ok((None, None)),
        Err(e) => bail!("--report {}: {e}", path.display()),
    };
    let report: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON run report", path.display()))?;
    let accuracy = report["test"]["accuracy"].as_f64();
    if given && accuracy.is_none() {
        bail!(
            "--report {}: no test.accuracy in it (the run had no test split)",
            path.display()
        );
    }
    let split = report["dataset"]
        .as_str()
        .map(|d| format!("{d} test ({} images)", report["test"]["images"]));
    Ok((accuracy, accuracy.and(split)))
}

/// Largest absolute difference between the two models' probabilities on seeded random inputs,
/// and on how many of them their top classes agree.
fn compare<B: Backend>(a: &Vit<B>, b: &Vit<B>, device: &B::Device) -> (f32, usize) {
    let size = a.config().img_size;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let values: Vec<f32> = (0..PROBES * 3 * size * size)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values, [PROBES, 3, size, size]), device);
    let pa = softmax(a.forward(x.clone()), 1);
    let pb = softmax(b.forward(x), 1);
    let agree = pa
        .clone()
        .argmax(1)
        .equal(pb.clone().argmax(1))
        .int()
        .sum()
        .into_scalar();
    let diff = (pa - pb).abs().max().into_scalar();
    (diff.elem::<f32>(), agree.elem::<i64>() as usize)
}
