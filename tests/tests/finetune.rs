//! MIMIC fine-tuning on real FERPlus images (the sample shipped in assets/): the training step
//! lowers the loss, layer decay really scales each group's update, checkpoints reload to the
//! same predictions, SupCon matches the SupContrast reference, and the CLI runs end to end.

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use mimic_core::augment::eval_view;
use mimic_core::data::{decode_all, load_split, DatasetKind, LoadOptions};
use mimic_core::loss::supcon_loss;
use mimic_core::mix::{LabelMetric, MixConfig};
use mimic_core::model::{Precision, VitConfig};
use mimic_core::train::{
    finetune_gradients, finetune_loss, GroupedOptimizer, MimicLossConfig, MimicModel, OptimKind,
    OptimizerConfig, ProjKind, ProjectionHead,
};
use mimic_core::weights::{export_safetensors, load_vit, param_shapes, LoadPolicy, TensorMap};
use mimic_tests::{assert_same_grads, fixture, named_grads, run_cli, worst_grad_gap};
use rand::SeedableRng;

type B = Autodiff<Flex>;

fn sample_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/ferplus-sample")
}

fn tiny_model(seed: u64) -> MimicModel<B> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let config = VitConfig::new(48, 12, 32, 2, 2).with_n_classes(8);
    let encoder = config.init::<B>(&device).unwrap();
    MimicModel {
        encoder,
        proj: ProjectionHead::new(ProjKind::Dense, 32, 16, &device),
    }
}

/// Two identical "views" of 16 real FERPlus training images, and their vote-majority labels.
fn real_batch() -> (Tensor<B, 4>, Vec<Vec<f32>>) {
    let split = load_split(
        DatasetKind::FerPlus,
        &sample_root(),
        "train",
        &LoadOptions::default(),
    )
    .unwrap();
    let samples = &split.samples[..16];
    let images = decode_all(samples, 2).unwrap();
    let mut pixels = Vec::new();
    let mut targets = Vec::new();
    for _view in 0..2 {
        for (img, s) in images.iter().zip(samples) {
            pixels.extend(eval_view(img, 48));
            targets.push(s.target.clone());
        }
    }
    let x = Tensor::from_data(
        TensorData::new(pixels, [32, 3, 48, 48]),
        &Default::default(),
    );
    (x, targets)
}

#[test]
fn a_few_steps_on_real_faces_lower_the_loss() {
    let (x, targets) = real_batch();
    let mut model = tiny_model(1);
    let cfg = OptimizerConfig {
        kind: OptimKind::AdamW,
        weight_decay: 0.0,
        layer_decay: 1.0,
        ..Default::default()
    };
    let mut optim = GroupedOptimizer::new(&cfg, &mut model, 2).unwrap();
    let loss_cfg = MimicLossConfig::default();
    let mix = MixConfig::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut losses = Vec::new();
    for _ in 0..12 {
        let plan = mix.sample(&mut rng, 48, 48);
        let l = finetune_loss(&model, x.clone(), &targets, Some(&plan), &loss_cfg);
        losses.push(l.ce.clone().into_scalar());
        model = optim.step(1e-3, model, l.total.backward());
    }
    let l = finetune_loss(&model, x.clone(), &targets, None, &loss_cfg);
    let end: f32 = l.ce.into_scalar();
    let first = losses[0];
    assert!(
        end < 0.8 * first,
        "cross-entropy {first} -> {end} after 12 steps ({losses:?})"
    );
}

#[test]
fn layer_decay_scales_each_groups_measured_update() {
    let (x, targets) = real_batch();
    let mut model = tiny_model(2);
    let decay = 0.5;
    let cfg = OptimizerConfig {
        weight_decay: 0.0,
        layer_decay: decay,
        ..Default::default()
    };
    let mut optim = GroupedOptimizer::new(&cfg, &mut model, 2).unwrap();
    let before = snapshot(&model);

    let lr = 1e-3;
    let l = finetune_loss(&model, x, &targets, None, &MimicLossConfig::default());
    let model = optim.step(lr, model, l.total.backward());
    let after = snapshot(&model);

    // Adam's first step moves each weight by lr·g/(|g| + eps) ≈ ±lr·scale: the median |Δ|
    // of every tensor must sit at its group's scale.
    let mut seen = std::collections::BTreeSet::new();
    for (name, old) in &before {
        let new = &after[name];
        let mut deltas: Vec<f64> = old
            .iter()
            .zip(new)
            .map(|(a, b)| ((a - b).abs() as f64) / lr)
            .collect();
        deltas.sort_by(f64::total_cmp);
        let median = deltas[deltas.len() / 2];
        let layer = mimic_core::train::layer_id(name, 2);
        let want = decay.powi((3 - layer) as i32);
        assert!(
            (median - want).abs() < 0.02 * want,
            "{name}: update scale {median}, expected {want}"
        );
        seen.insert(layer);
    }
    assert_eq!(
        seen.len(),
        4,
        "embeddings, two blocks and the heads were all checked"
    );
}

fn snapshot(model: &MimicModel<B>) -> HashMap<String, Vec<f32>> {
    let bytes = export_safetensors(model, &HashMap::new()).unwrap();
    let map = TensorMap::from_safetensors_bytes(&bytes, "snapshot").unwrap();
    map.tensors.into_iter().map(|(k, t)| (k, t.data)).collect()
}

#[test]
fn saved_checkpoint_reloads_to_identical_predictions() {
    let (x, _) = real_batch();
    let mut model = tiny_model(3);
    let bytes = export_safetensors(&model, &HashMap::new()).unwrap();
    let map = TensorMap::from_safetensors_bytes(&bytes, "checkpoint").unwrap();
    let names: Vec<String> = param_shapes::<B, _>(&mut model)
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert!(names.iter().any(|n| n == "proj_head.fc2.weight"));

    let policy = LoadPolicy {
        allow_unused: vec!["proj_head.*".into()],
        ..LoadPolicy::strict()
    };
    let config = model.encoder.config().clone();
    let (reloaded, _) = load_vit::<Flex>(&config, map, &policy, &Default::default()).unwrap();
    let a = model.encoder.valid().forward(x.clone().inner());
    let b = reloaded.forward(x.inner());
    // Same classes; logits equal up to f32 summation order (the reloaded linear weights are
    // transposed views, which gemm may sum in another order).
    a.clone()
        .argmax(1)
        .into_data()
        .assert_eq(&b.clone().argmax(1).into_data(), true);
    let tol = burn::tensor::Tolerance::absolute(1e-5);
    a.into_data().assert_approx_eq::<f32>(&b.into_data(), tol);
}

#[test]
fn supcon_matches_the_supcontrast_reference() {
    let text = std::fs::read_to_string(fixture("supcon.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in v["cases"].as_array().unwrap() {
        let rows: Vec<Vec<f32>> = case["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let labels: Vec<usize> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let (n, d) = (rows.len(), rows[0].len());
        let z = Tensor::<Flex, 2>::from_data(
            TensorData::new(rows.concat(), [n, d]),
            &Default::default(),
        );
        // View-major: sample i of view 2 is row i + bsz.
        let class = |i: usize| labels[i % labels.len()];
        let mask: Vec<f32> = (0..n * n)
            .map(|k| f32::from(k / n != k % n && class(k / n) == class(k % n)))
            .collect();
        let mask = Tensor::from_data(TensorData::new(mask, [n, n]), &Default::default());
        let tau = case["temperature"].as_f64().unwrap();
        let got: f32 = supcon_loss(z, mask, tau).into_scalar();
        let want = case["loss"].as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "SupCon {got} vs reference {want}"
        );
    }
    let _ = LabelMetric::Linf;
}

#[test]
fn finetune_then_eval_end_to_end_on_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let (ok, stdout, stderr) = run_cli(&[
        "finetune",
        "--max-steps",
        "3",
        "--batch",
        "8",
        "--log-every",
        "1",
        "--out",
        out_s,
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}\n{stdout}");
    assert!(stdout.contains("ferplus train: 1755 images"), "{stdout}");
    assert!(stdout.contains("held-out test accuracy"), "{stdout}");
    for f in [
        "config.json",
        "metrics.jsonl",
        "last.safetensors",
        "best.safetensors",
        "report.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"lr\"")).count(), 3);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["n_classes"], 8);
    assert_eq!(config["optimizer"]["eps"].as_f64().unwrap() as f32, 1e-8);

    // A second run into the same directory is refused rather than overwriting it.
    let (ok, _, stderr) = run_cli(&[
        "finetune",
        "--max-steps",
        "1",
        "--out",
        out_s,
        "--device",
        "cpu",
    ]);
    assert!(!ok && stderr.contains("already holds a run"), "{stderr}");

    let best = out.join("best.safetensors");
    let eval_out = dir.path().join("eval");
    let (ok, stdout, stderr) = run_cli(&[
        "eval",
        "--weights",
        best.to_str().unwrap(),
        "--dataset",
        "ferplus",
        "--data",
        sample_root().to_str().unwrap(),
        "--split",
        "test",
        "--json",
        "--out",
        eval_out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    let m: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let total: u64 = m["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, m["images"].as_u64().unwrap());
    assert_eq!(
        total, 355,
        "the sample's test split keeps 355 majority-vote images"
    );
    assert!(eval_out.join("confusion.png").exists());
}

#[test]
fn bad_settings_name_the_flag_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "epochs = 3\nlearning-rate = 0.1\n").unwrap();
    let (ok, _, stderr) = run_cli(&["finetune", "--config", cfg.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("run.toml") && stderr.contains("learning-rate"),
        "{stderr}"
    );

    let (ok, _, stderr) = run_cli(&["finetune", "--lr=-1"]);
    assert!(!ok && stderr.contains("--lr"), "{stderr}");
    let (ok, _, stderr) = run_cli(&["finetune", "--loss", "focal"]);
    assert!(!ok && stderr.contains("unknown loss 'focal'"), "{stderr}");
    let (ok, _, stderr) = run_cli(&[
        "finetune",
        "--data",
        "/nonexistent/ferplus",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("/nonexistent/ferplus"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ablate_runs_every_configuration_and_seed() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(
        &grid,
        "seeds = [0, 1]\n[base]\nmax-steps = 1\nbatch = 4\nepochs = 1\n\
         [[run]]\nname = \"CE\"\nloss = \"ce\"\n[[run]]\nname = \"MSCL\"\nloss = \"mscl\"\n",
    )
    .unwrap();
    let out = dir.path().join("ablation");
    let (ok, stdout, stderr) = run_cli(&[
        "ablate",
        "--grid",
        grid.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}\n{stdout}");
    let table = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.contains("| CE | loss=\"ce\" | 2 |") && table.contains("| MSCL |"),
        "{table}"
    );
    for run in ["ce-seed0", "ce-seed1", "mscl-seed0", "mscl-seed1"] {
        assert!(out.join(run).join("report.json").exists(), "{run}");
    }

    std::fs::write(&grid, "[[run]]\nname = \"x\"\nlos = \"ce\"\n").unwrap();
    let (ok, _, stderr) = run_cli(&["ablate", "--grid", grid.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("grid.toml") && stderr.contains("los"),
        "{stderr}"
    );
}

#[test]
fn the_contrastive_branch_learns_on_a_fixed_batch() {
    // The projection head must receive gradients: trained on MSCL alone (CE weight still 1,
    // contrastive weight 1) the contrastive term of a fixed unmixed batch falls.
    let (x, targets) = real_batch();
    let mut model = tiny_model(4);
    let cfg = OptimizerConfig {
        kind: OptimKind::AdamW,
        weight_decay: 0.0,
        layer_decay: 1.0,
        ..Default::default()
    };
    let mut optim = GroupedOptimizer::new(&cfg, &mut model, 2).unwrap();
    let loss_cfg = MimicLossConfig {
        lambda_c: 1.0,
        ..Default::default()
    };
    let mut values = Vec::new();
    for _ in 0..12 {
        let l = finetune_loss(&model, x.clone(), &targets, None, &loss_cfg);
        values.push(l.contrastive.clone().unwrap().into_scalar());
        model = optim.step(1e-3, model, l.total.backward());
    }
    eprintln!("contrastive: {values:?}");
    assert!(
        values[11] < values[0] - 0.05,
        "contrastive term did not fall: {values:?}"
    );
}

/// The mixing plan the gradient tests share (seeded).
fn fixed_plan() -> mimic_core::mix::MixPlan {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    MixConfig::default().sample(&mut rng, 48, 48)
}

/// Loss and named gradients of one MIMIC step (default loss, seed 9) in `shards` shards.
fn step_in_shards(
    model: &MimicModel<B>,
    x: &Tensor<B, 4>,
    targets: &[Vec<f32>],
    plan: &mimic_core::mix::MixPlan,
    shards: usize,
) -> (f32, Vec<(String, Vec<f32>)>) {
    let cfg = MimicLossConfig::default();
    let step = finetune_gradients(model, x.clone(), targets, Some(plan), &cfg, shards, 9);
    let loss: f32 = step.losses.total.into_scalar();
    // named_grads reads each gradient as f32: a gradient of another type would fail there.
    (loss, named_grads(model, &step.grads))
}

#[test]
fn sharded_gradients_equal_the_unsharded_step() {
    // A mixed batch of 32 real views, MSCL on: the loss couples every sample, so the shards
    // must hand the whole batch's feature gradient back to each encoder copy.
    let (x, targets) = real_batch();
    let model = tiny_model(3);
    let loss_cfg = MimicLossConfig::default();
    let plan = fixed_plan();

    let reference = finetune_loss(&model, x.clone(), &targets, Some(&plan), &loss_cfg);
    let ref_loss: f32 = reference.total.clone().into_scalar();
    let ref_grads = GradientsParams::from_grads(reference.total.backward(), &model);
    let expected = named_grads(&model, &ref_grads);
    assert!(
        expected.iter().all(|(_, g)| !g.is_empty()),
        "every parameter has a gradient"
    );

    for shards in [1, 2, 3] {
        let (loss, got) = step_in_shards(&model, &x, &targets, &plan, shards);
        assert!(
            (loss - ref_loss).abs() <= 1e-5 * ref_loss.abs(),
            "{shards} shards: loss"
        );
        assert_same_grads(&expected, &got, &format!("{shards} shards"));
    }
}

/// How far gradients with bf16 matrix products may stray from the f32 ones, relative to each
/// tensor's largest entry: bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2 %), and
/// a gradient passes through a few rounded products.
const BF16_GRAD_TOL: f32 = 5e-2;

#[test]
fn bf16_products_stay_near_f32_with_f32_gradients_in_every_shard() {
    let (x, targets) = real_batch();
    let model = tiny_model(3);
    let plan = fixed_plan();
    let step = |model: &MimicModel<B>, shards| step_in_shards(model, &x, &targets, &plan, shards);
    let (f32_loss, f32_grads) = step(&model, 1);

    let half = MimicModel {
        encoder: model.encoder.clone().with_precision(Precision::Bf16),
        proj: model.proj.clone(),
    };
    for shards in [1, 2] {
        let (loss, grads) = step(&half, shards);
        let what = format!("bf16, {shards} shard(s)");
        assert!(
            (loss - f32_loss).abs() <= 1e-2 * f32_loss.abs(),
            "{what}: loss {loss} vs {f32_loss}"
        );
        let gap = worst_grad_gap(&f32_grads, &grads, &what);
        assert!(gap <= BF16_GRAD_TOL, "{what}: gradients {gap} from f32");
        // Rounding to bf16 must show: f32 shards agree to ~1e-6.
        assert!(
            gap > 1e-4,
            "{what}: gradients equal the f32 ones; was bf16 used?"
        );
    }
}

#[test]
fn seeded_stochastic_depth_repeats_and_shards_are_used() {
    // With stochastic depth on, a step depends on its seed (and shard count) alone.
    let (x, targets) = real_batch();
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 4);
    let config = VitConfig::new(48, 12, 32, 2, 2)
        .with_n_classes(8)
        .with_drop_path(0.5);
    let model = MimicModel {
        encoder: config.init::<B>(&device).unwrap(),
        proj: ProjectionHead::new(ProjKind::Dense, 32, 16, &device),
    };
    let cfg = MimicLossConfig::default();
    let loss = |shards: usize, seed: u64| -> f32 {
        finetune_gradients(&model, x.clone(), &targets, None, &cfg, shards, seed)
            .losses
            .total
            .into_scalar()
    };
    for shards in [1, 2] {
        assert_eq!(
            loss(shards, 7),
            loss(shards, 7),
            "{shards} shards: same seed, same step"
        );
        assert_ne!(
            loss(shards, 7),
            loss(shards, 8),
            "{shards} shards: the seed is used"
        );
    }
}
