//! Reference parity: timm ViTs loaded through the same import path users use give timm's
//! logits and pooled features; the MAE sin-cos table and position-embedding resize match the
//! reference construction. Fixtures: tests/reference/make_vit_fixtures.py.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use mimic_core::model::pos_embed::{resize_pos_embed, sincos_2d};
use mimic_core::model::{Pool, Vit, VitConfig};
use mimic_core::preprocess::read_image;
use mimic_core::weights::{fit_head, load_vit, LoadPolicy, TensorMap};
use mimic_tests::{assert_close, fixture, floats, reference};

type B = Flex;

/// f32 on the CPU: the reference tolerance of the issue, relative to the output magnitude.
const PARITY_TOL: f32 = 1e-5;

fn run(config: VitConfig, weights: &str, image: &str) -> (Vec<f32>, Vec<f32>, Vit<B>) {
    let device = Default::default();
    let map = TensorMap::read(&fixture(weights)).unwrap();
    let config = fit_head(config, &map);
    let (model, report) = load_vit::<B>(&config, map, &LoadPolicy::strict(), &device).unwrap();
    assert!(
        report.missing.is_empty() && report.unused.is_empty(),
        "{report}"
    );

    let s = config.img_size;
    let img = read_image(&fixture(image)).unwrap();
    assert_eq!(
        (img.height, img.width),
        (s, s),
        "fixture images are at the model size"
    );
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(img.to_normalized_chw(), [1, 3, s, s]),
        &device,
    );
    let feats = model.forward_features(x.clone());
    let logits = model.forward_head(feats.clone());
    let v = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
    (v(logits), v(feats), model)
}

#[test]
fn toy_vit_safetensors_matches_timm() {
    let r = reference();
    let (logits, feats, model) = run(
        VitConfig::preset("vit_toy_patch8_32").unwrap(),
        "vit_toy.safetensors",
        "face32.png",
    );
    assert_eq!(model.config().pool, Pool::Gap);
    assert_close(
        &logits,
        &floats(&r["toy"]["logits"]),
        PARITY_TOL,
        "toy logits",
    );
    assert_close(
        &feats,
        &floats(&r["toy"]["features"]),
        PARITY_TOL,
        "toy features",
    );
}

#[test]
fn vit_tiny_pth_with_model_key_matches_timm() {
    let r = reference();
    // timm vit_tiny_patch16_224 cut to 3 blocks, stored MAE-style under "model" in f16.
    let config = VitConfig {
        depth: 3,
        ..VitConfig::preset("vit_tiny_patch16_224").unwrap()
    };
    let (logits, feats, model) = run(config, "vit_ti3.pth", "face224.png");
    assert_eq!(model.config().pool, Pool::Cls);
    assert_eq!(logits.len(), 8);
    assert_close(
        &logits,
        &floats(&r["ti3"]["logits"]),
        PARITY_TOL,
        "ViT-Ti logits",
    );
    assert_close(
        &feats,
        &floats(&r["ti3"]["features"]),
        PARITY_TOL,
        "ViT-Ti features",
    );
}

#[test]
fn sincos_table_equals_the_mae_construction() {
    let want = floats(&reference()["sincos_d16_g4"]);
    let got = sincos_2d(16, 4, true);
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-6, "sin-cos table differs from MAE's by {err:e}");
}

#[test]
fn pos_embed_resize_14_to_7_matches_mae_interpolate() {
    let r = reference();
    let input = floats(&r["resize_in"]);
    let got = resize_pos_embed(&input, 16, 1, 14, 7);
    assert_close(&got, &floats(&r["resize_14_to_7"]), 1e-5, "bicubic 14 -> 7");
    assert_eq!(
        resize_pos_embed(&input, 16, 1, 14, 14),
        input,
        "equal size is the identity"
    );
}
