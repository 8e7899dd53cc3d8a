use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use mimic_core::backend::AutodiffBackend;
use mimic_core::model::VitConfig;
use mimic_core::preprocess::read_image;
use mimic_core::weights::{fit_head, labels_of, load_vit, LoadPolicy, TensorMap};

use crate::backend::{dispatch, DeviceKind, Job};

/// Arguments of `predict`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model preset (see `train-native presets`), e.g. vit_base_patch16_224.
    #[arg(long)]
    pub model: String,
    /// Checkpoint: ours, or a timm / MAE `.safetensors` or `.pth` with a classification head.
    #[arg(long)]
    pub weights: PathBuf,
    /// Image file (PNG, JPEG, BMP, GIF, TIFF, WebP; grey images are converted to RGB).
    #[arg(long)]
    pub image: PathBuf,
    /// Print one JSON object {"logits", "probs", "labels"} instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Number of classes to list in the table.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

/// Loads the checkpoint strictly, preprocesses the image and prints the prediction.
pub fn run(args: Args) -> Result<()> {
    let device = args.device;
    dispatch(device, args)
}

impl Job for Args {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device, _backend: &str) -> Result<()> {
        let preset = VitConfig::preset(&self.model)?;
        let map = TensorMap::read(&self.weights)
            .with_context(|| format!("cannot read weights {}", self.weights.display()))?;
        let config = fit_head(preset, &map);
        if config.n_classes == 0 {
            bail!(
                "{}: the checkpoint has no classification head (head.weight)",
                self.weights.display()
            );
        }
        let labels = labels_of(&map, config.n_classes);
        let (model, _) = load_vit::<B::InnerBackend>(&config, map, &LoadPolicy::strict(), &device)
            .with_context(|| format!("cannot load {} as {}", self.weights.display(), self.model))?;

        let size = config.img_size;
        let pixels = read_image(&self.image)?
            .resize_bilinear(size, size)
            .to_normalized_chw();
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(pixels, [1, 3, size, size]),
            &device,
        );

        let logits = model.forward(x);
        let probs = softmax(logits.clone(), 1);
        let logits = logits.into_data().to_vec::<f32>().expect("f32 logits");
        let probs = probs
            .into_data()
            .to_vec::<f32>()
            .expect("f32 probabilities");

        if self.json {
            let out = serde_json::json!({ "logits": logits, "probs": probs, "labels": labels });
            println!("{out}");
            return Ok(());
        }
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        println!("{}:", self.image.display());
        for &i in order.iter().take(self.top) {
            println!(
                "  {:<12} {:6.2} %   (logit {:+.4})",
                labels[i],
                100.0 * probs[i],
                logits[i]
            );
        }
        Ok(())
    }
}
