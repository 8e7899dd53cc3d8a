//! MAE parity and checkpoint rules: an official-layout `*_full.pth` loads strictly, and the
//! masking, encoder, decoder and both losses match facebookresearch/mae's definition for fixed
//! weights, images and noise (fixtures: tests/reference/make_mae_fixtures.py).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use mimic_core::mae::{load_mae, patchify, Mae, MaeConfig, Masking};
use mimic_core::model::Pool;
use mimic_core::weights::{load_vit, save_safetensors, LoadPolicy, TensorMap};
use mimic_tests::{assert_close, fixture, floats};

type B = Flex;

/// f32 on the CPU, relative to the magnitude of the reference values (the bound).
const PARITY_TOL: f32 = 1e-5;

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("mae_reference.json"))
        .expect("tests/fixtures/mae_reference.json should be committed");
    serde_json::from_str(&text).expect("valid JSON")
}

fn toy(norm_pix: bool) -> (Mae<B>, MaeConfig) {
    let config = MaeConfig::for_preset("vit_toy_patch8_32")
        .unwrap()
        .with_norm_pix_loss(norm_pix);
    let map = TensorMap::read(&fixture("mae_toy_full.pth")).unwrap();
    let (model, report) = load_mae::<B>(&config, map, &Default::default()).unwrap();
    assert!(
        report.missing.is_empty() && report.unused.is_empty(),
        "{report}"
    );
    (model, config)
}

fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn forward_and_loss_match_the_reference() {
    let r = reference();
    let device = Default::default();
    let images = Tensor::<B, 4>::from_data(
        TensorData::new(floats(&r["images"]), [2, 3, 32, 32]),
        &device,
    );
    for norm_pix in [true, false] {
        let (model, config) = toy(norm_pix);
        assert_eq!(config.len_keep(), 4);
        let masking = Masking::from_noise(&floats(&r["noise"]), 2, 16, config.len_keep());
        assert_eq!(masking.mask, floats(&r["mask"]), "mask");
        let restore: Vec<usize> = r["ids_restore"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(masking.ids_restore, restore, "ids_restore");

        let latent = model.forward_encoder(images.clone(), &masking);
        assert_close(&to_vec(latent), &floats(&r["latent"]), PARITY_TOL, "latent");
        let out = model.forward(images.clone(), &masking);
        assert_close(&to_vec(out.pred), &floats(&r["pred"]), PARITY_TOL, "pred");
        let key = if norm_pix {
            "loss_norm_pix"
        } else {
            "loss_plain"
        };
        let want = r[key].as_f64().unwrap() as f32;
        assert_close(&to_vec(out.loss), &[want], PARITY_TOL, key);
    }
    assert_close(
        &to_vec(patchify(images, 8)),
        &floats(&r["patchified"]),
        0.0,
        "patchify",
    );
}

#[test]
fn the_biased_variance_would_be_caught() {
    // The norm-pix loss with the biased variance differs from the reference by far more than
    // the tolerance, so the parity test above pins the unbiased one.
    let r = reference();
    let t = floats(&r["patchified"]);
    let n = 8 * 8 * 3;
    let (mut biased, mut unbiased) = (0f64, 0f64);
    for patch in t.chunks(n) {
        let mean = patch.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let ss: f64 = patch.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
        biased += (ss / n as f64).sqrt();
        unbiased += (ss / (n - 1) as f64).sqrt();
    }
    assert!((unbiased / biased - 1.0) > 100.0 * PARITY_TOL as f64);
}

#[test]
fn encoder_only_checkpoints_init_finetuning_but_not_pretraining() {
    let device = Default::default();
    let (model, config) = toy(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encoder.safetensors");
    save_safetensors(&model.encoder, &Default::default(), &path).unwrap();

    // Fine-tuning: exactly the GAP head and its norm are missing; the encoder's final norm is
    // the only tensor left over.
    let ft = config
        .encoder
        .clone()
        .with_n_classes(8)
        .with_pool(Pool::Gap);
    let map = TensorMap::read(&path).unwrap();
    let (_, report) = load_vit::<B>(&ft, map, &LoadPolicy::finetune_init(), &device).unwrap();
    assert_eq!(
        report.missing,
        ["fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"]
    );
    assert_eq!(report.unused, ["norm.bias", "norm.weight"]);

    // The full official-layout file also initialises fine-tuning; the decoder is reported unused.
    let map = TensorMap::read(&fixture("mae_toy_full.pth")).unwrap();
    let (_, report) = load_vit::<B>(&ft, map, &LoadPolicy::finetune_init(), &device).unwrap();
    assert_eq!(report.missing.len(), 4);
    assert!(report.unused.iter().any(|k| k == "decoder_pred.weight"));
    assert!(report.unused.iter().any(|k| k == "mask_token"));

    // Continued pre-training needs the decoder.
    let map = TensorMap::read(&path).unwrap();
    let err = load_mae::<B>(&config, map, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder only") && err.contains("decoder"),
        "{err}"
    );
}

#[test]
fn a_wrong_shaped_decoder_fails_loudly() {
    // The toy file loaded into a model with a wider decoder: every decoder tensor is named.
    let config = MaeConfig {
        decoder_dim: 64,
        ..MaeConfig::for_preset("vit_toy_patch8_32").unwrap()
    };
    let map = TensorMap::read(&fixture("mae_toy_full.pth")).unwrap();
    let err = load_mae::<B>(&config, map, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decoder_embed.weight") && err.contains("wrong shape"),
        "{err}"
    );
}
