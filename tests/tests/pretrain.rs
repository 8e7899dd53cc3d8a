//! MAE pre-training on real images: a few steps lower the loss on a fixed batch, sharded steps
//! give the unsharded gradients, and the
//! `pretrain` command runs end to end on a plain folder of images, writes its checkpoints and
//! reconstruction grid, continues from its full checkpoint and hands its encoder to
//! `finetune --init` with exactly the expected keys reported.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use mimic_core::augment::eval_view;
use mimic_core::data::{decode_all, unlabelled_images, LoadOptions};
use mimic_core::mae::{MaeConfig, Masking};
use mimic_core::train::{mae_gradients, GroupedOptimizer, OptimKind, OptimizerConfig};
use mimic_tests::{assert_same_grads, named_grads, run_cli};
use rand::SeedableRng;

type B = Autodiff<Flex>;

/// Real photos: the FERPlus validation images shipped in assets/ (a plain folder of PNGs plus
/// a label file, which pre-training skips).
fn image_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/ferplus-sample/FER2013Valid")
}

#[test]
fn a_few_steps_on_real_images_lower_the_loss() {
    let device = Default::default();
    let split = unlabelled_images(&image_folder(), &LoadOptions::default()).unwrap();
    assert_eq!(
        split.dropped_count(),
        1,
        "label.csv is skipped: {:?}",
        split.dropped
    );
    let images = decode_all(&split.samples[..16], 2).unwrap();
    let pixels: Vec<f32> = images.iter().flat_map(|img| eval_view(img, 32)).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [16, 3, 32, 32]), &device);

    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    let config = MaeConfig::for_preset("vit_toy_patch8_32").unwrap();
    let mut model = config.init::<B>(&device).unwrap();
    let opt = OptimizerConfig {
        kind: OptimKind::AdamW,
        weight_decay: 0.05,
        beta2: 0.95,
        layer_decay: 1.0,
        ..Default::default()
    };
    let mut optim = GroupedOptimizer::new(&opt, &mut model, 2).unwrap();
    let masking = model.random_masking(&mut rand::rngs::StdRng::seed_from_u64(0), 16);
    let loss_of = |m: &mimic_core::mae::Mae<B>, k: &Masking| -> f32 {
        m.forward(x.clone(), k).loss.into_scalar()
    };
    let first = loss_of(&model, &masking);
    for _ in 0..15 {
        let loss = model.forward(x.clone(), &masking).loss;
        model = optim.step(1e-3, model, loss.backward());
    }
    let end = loss_of(&model, &masking);
    assert!(
        end < 0.8 * first,
        "MAE loss {first} -> {end} after 15 steps"
    );
}

#[test]
fn sharded_mae_gradients_equal_the_unsharded_step() {
    let device = Default::default();
    let split = unlabelled_images(&image_folder(), &LoadOptions::default()).unwrap();
    let images = decode_all(&split.samples[..10], 2).unwrap();
    let pixels: Vec<f32> = images.iter().flat_map(|img| eval_view(img, 32)).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [10, 3, 32, 32]), &device);
    <B as burn::tensor::backend::Backend>::seed(&device, 8);
    let model = MaeConfig::for_preset("vit_toy_patch8_32")
        .unwrap()
        .init::<B>(&device)
        .unwrap();
    let masking = model.random_masking(&mut rand::rngs::StdRng::seed_from_u64(1), 10);

    let loss = model.forward(x.clone(), &masking).loss;
    let want_loss: f32 = loss.clone().into_scalar();
    let want = named_grads(
        &model,
        &GradientsParams::from_grads(loss.backward(), &model),
    );
    for shards in [1, 3, 10] {
        let (got_loss, grads) = mae_gradients(&model, x.clone(), &masking, shards);
        assert!(
            (got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "{shards} shards: loss {got_loss} vs {want_loss}"
        );
        // The fixed sin-cos position tables have no gradient in either step; every other
        // parameter must match.
        let got = named_grads(&model, &grads);
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            if w.is_empty() {
                assert!(
                    g.is_empty(),
                    "{shards} shards: {name} has a gradient it should not"
                );
            }
        }
        let pairs: Vec<_> = want
            .iter()
            .cloned()
            .zip(got)
            .filter(|((_, w), _)| !w.is_empty())
            .collect();
        let (w, g): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        assert_same_grads(&w, &g, &format!("{shards} shards"));
    }
}

#[test]
fn pretrain_then_continue_then_finetune_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mae");
    let (data, out_s) = (image_folder(), out.to_str().unwrap().to_string());
    let base = [
        "pretrain",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "vit_toy_patch8_32",
        "--batch",
        "32",
        "--val-images",
        "8",
        "--recon-every",
        "1",
        "--lr",
        "1e-3",
        "--warmup-epochs",
        "0",
        "--log-every",
        "2",
        "--device",
        "cpu",
    ];
    let mut args = base.to_vec();
    args.extend(["--epochs", "2", "--out", &out_s]);
    let (ok, stdout, stderr) = run_cli(&args);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("300 images in"), "{stdout}");
    assert!(stdout.contains("292 train, 8 held out"), "{stdout}");
    assert!(stdout.contains("skipped: 1 not an image file"), "{stdout}");
    for f in [
        "config.json",
        "metrics.jsonl",
        "full.safetensors",
        "encoder.safetensors",
        "recon-epoch001.png",
        "recon-epoch002.png",
        "recon.png",
        "report.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // 8 rows of 4 cells, each the 32 px image scaled by 3; 4 px gaps and a 20 px header.
    let png = mimic_core::preprocess::read_image(&out.join("recon.png")).unwrap();
    assert_eq!((png.width, png.height), (4 * 96 + 5 * 4, 20 + 8 * 100 + 4));

    // The held-out loss (fixed images, fixed masking) falls over the two epochs.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let val: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["val_loss"].as_f64())
        .collect();
    assert_eq!(val.len(), 2, "{metrics}");
    assert!(val[1] < val[0], "held-out loss {val:?}");

    // Continue pre-training from the full checkpoint; the encoder alone is refused.
    let full = out.join("full.safetensors");
    let encoder = out.join("encoder.safetensors");
    let more = dir.path().join("more");
    let mut args = base.to_vec();
    args.extend([
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--out",
        more.to_str().unwrap(),
    ]);
    args.extend(["--init", full.to_str().unwrap()]);
    let (ok, stdout, stderr) = run_cli(&args);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(
        stdout.contains("init") && stdout.contains("loaded"),
        "{stdout}"
    );
    let refused = dir.path().join("refused");
    let mut args = base.to_vec();
    args.extend(["--epochs", "1", "--out", refused.to_str().unwrap()]);
    args.extend(["--init", encoder.to_str().unwrap()]);
    let (ok, _, stderr) = run_cli(&args);
    assert!(!ok && stderr.contains("encoder only"), "{stderr}");
    assert!(
        !refused.join("config.json").exists(),
        "nothing is written for a refused run"
    );

    // Fine-tuning from the encoder (its architecture read from the file, no --model) reports
    // exactly the GAP norm and head as fresh.
    let ft = dir.path().join("ft");
    let (ok, stdout, stderr) = run_cli(&[
        "finetune",
        "--init",
        encoder.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch",
        "8",
        "--out",
        ft.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(
        stdout.contains(
            "kept fresh (expected missing): fc_norm.weight, fc_norm.bias, head.weight, head.bias;"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("from --init (0.13 M parameters)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ignored (expected unused): norm.bias, norm.weight"),
        "{stdout}"
    );
}

#[test]
fn bad_pretrain_input_names_the_flag_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run_cli(&[
        "pretrain",
        "--data",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("--data") && stderr.contains("no such folder"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("no usable samples"), "{stderr}");

    std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("broken.png"), "{stderr}");

    let folder = image_folder();
    let data = folder.to_str().unwrap();
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", data, "--mask-ratio", "1.0"]);
    assert!(!ok && stderr.contains("--mask-ratio"), "{stderr}");
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", data, "--model", "vit_huge"]);
    assert!(!ok && stderr.contains("unknown model preset"), "{stderr}");
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", data, "--val-images", "200"]);
    assert!(!ok && stderr.contains("--val-images"), "{stderr}");
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", data, "--val-images", "0"]);
    assert!(!ok && stderr.contains("--val-images"), "{stderr}");
    let (ok, _, stderr) = run_cli(&["pretrain", "--data", data, "--decoder-dim", "0"]);
    assert!(!ok && stderr.contains("--decoder-dim"), "{stderr}");
    // --resume takes the saved settings; another setting with it is a usage error.
    let (ok, _, stderr) = run_cli(&["pretrain", "--resume", data, "--epochs", "3"]);
    assert!(!ok && stderr.contains("--epochs"), "{stderr}");
}
