use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mimic_core::backend::AutodiffBackend;
use mimic_core::data::{DatasetKind, FerPlusMode, LoadOptions};

use crate::backend::{dispatch, DeviceKind, Job};
use crate::pipeline;
use crate::plot::confusion_png;
use crate::run::{evaluate, load_classifier, metrics_json, write_json};

/// Arguments of `eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint: ours (`best.safetensors` of a run), or a timm file with --model.
    #[arg(long)]
    pub weights: PathBuf,
    /// Model preset, needed only for checkpoints that do not record their configuration.
    #[arg(long)]
    pub model: Option<String>,
    /// Data set: ferplus, rafdb, affectnet7, affectnet8, fer2013, folder.
    #[arg(long)]
    pub dataset: String,
    /// Data set root.
    #[arg(long)]
    pub data: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Drop images that are pixel-identical to a training image (needs the train split).
    #[arg(long)]
    pub dedup: bool,
    /// Sample ids to leave out (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where to write the confusion matrix (PNG and JSON). Default: beside the weights.
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
}

/// Evaluates a checkpoint on a split: accuracy, mean class accuracy, per-class accuracy and
/// the confusion matrix (printed, written as JSON and drawn as a PNG).
pub fn run(args: Args) -> Result<()> {
    if args.batch == 0 || args.workers == 0 {
        bail!("--batch and --workers must be at least 1");
    }
    dispatch(args.device, args)
}

impl Job for Args {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, _backend: &str) -> Result<()> {
        let kind = DatasetKind::parse(&self.dataset)?;
        let clf =
            load_classifier::<B::InnerBackend>(&self.weights, self.model.as_deref(), &device)?;
        // Data sets with fixed classes are checked before any image is read.
        if let Some(classes) = kind.classes() {
            check_classes(&self.weights, &clf.labels, kind, classes)?;
        }
        let options = LoadOptions {
            ferplus_mode: FerPlusMode::Majority,
            exclude: self.exclude.clone(),
        };
        let mut split = pipeline::load(kind, &self.data, &self.split, &options, self.workers)?;
        if self.dedup {
            let train = pipeline::load(kind, &self.data, "train", &options, self.workers)
                .context("--dedup needs the train split")?;
            pipeline::dedup(&mut split, &train);
        }
        check_classes(&self.weights, &clf.labels, kind, &split.split.classes)?;
        if !self.json {
            println!("{}", split.split.report());
        }

        let cm = evaluate(
            &clf.model,
            &split.images,
            &split.labels(),
            self.batch,
            &device,
        );
        let metrics = metrics_json(&cm, &clf.labels);
        let out = self.out.clone().unwrap_or_else(|| {
            let dir = self.weights.parent().map(PathBuf::from).unwrap_or_default();
            dir.join(format!("eval-{}-{}", kind.name(), self.split))
        });
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        write_json(&out.join("metrics.json"), &metrics)?;
        let title = format!(
            "{} {}: acc {:.2} %  mean class {:.2} %",
            kind.name(),
            self.split,
            100.0 * cm.accuracy(),
            100.0 * cm.mean_class_accuracy()
        );
        confusion_png(&cm, &clf.labels, &title, &out.join("confusion.png"))?;

        if self.json {
            println!("{metrics}");
            return Ok(());
        }
        println!("{title} ({} images)", cm.total());
        for (label, acc) in clf.labels.iter().zip(cm.per_class_accuracy()) {
            match acc {
                Some(a) => println!("  {label:<12} {:6.2} %", 100.0 * a),
                None => println!("  {label:<12}      - (no images)"),
            }
        }
        println!(
            "confusion matrix written to {}",
            out.join("confusion.png").display()
        );
        Ok(())
    }
}

/// Refuses a checkpoint whose classes (names, count or order) are not the data set's.
fn check_classes<S: AsRef<str>>(
    weights: &std::path::Path,
    labels: &[String],
    kind: DatasetKind,
    classes: &[S],
) -> Result<()> {
    let classes: Vec<&str> = classes.iter().map(AsRef::as_ref).collect();
    if labels
        .iter()
        .map(String::as_str)
        .eq(classes.iter().copied())
    {
        return Ok(());
    }
    bail!(
        "{}: the checkpoint has {} classes [{}] but {kind} has {} [{}]; evaluate it on the data \
         set it was trained on",
        weights.display(),
        labels.len(),
        labels.join(", "),
        classes.len(),
        classes.join(", ")
    )
}
