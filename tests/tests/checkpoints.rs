//! Bad checkpoints fail loudly with the key or file named; none leaves random weights in use.
//! Export writes timm names that load back to the same outputs.

use std::collections::HashMap;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use mimic_core::model::{Vit, VitConfig};
use mimic_core::weights::{
    export_safetensors, fit_head, load_vit, LoadPolicy, TensorMap, LABELS_KEY,
};
use mimic_core::Error;
use mimic_tests::fixture;
use safetensors::tensor::{Dtype, TensorView};

type B = Flex;

fn toy_config() -> VitConfig {
    VitConfig::preset("vit_toy_patch8_32").unwrap()
}

fn toy_map() -> TensorMap {
    TensorMap::read(&fixture("vit_toy.safetensors")).unwrap()
}

/// Writes a map back to safetensors bytes (f32).
fn to_bytes(map: &TensorMap) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.shape.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load(map: TensorMap) -> Result<Vit<B>, Error> {
    let config = fit_head(toy_config(), &map);
    load_vit::<B>(&config, map, &LoadPolicy::strict(), &Default::default()).map(|(m, _)| m)
}

#[test]
fn wrong_shaped_tensor_is_named() {
    let mut map = toy_map();
    let t = map.tensors.get_mut("blocks.1.mlp.fc1.weight").unwrap();
    t.shape = vec![128, 128];
    let err = load(map).unwrap_err().to_string();
    assert!(
        err.contains("wrong shape: blocks.1.mlp.fc1.weight: model [256, 64], file [128, 128]"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut map = toy_map();
    map.tensors.remove("blocks.0.attn.qkv.bias");
    let err = load(map).unwrap_err().to_string();
    assert!(
        err.contains("missing from the file: blocks.0.attn.qkv.bias [192]"),
        "{err}"
    );
    assert!(
        err.contains("vit_toy.safetensors"),
        "the file is named: {err}"
    );
}

#[test]
fn unexpected_tensor_is_named_unless_allowed() {
    let mut map = toy_map();
    let extra = map.tensors["head.bias"].clone();
    map.tensors.insert("decoder_embed.bias".into(), extra);
    let err = load(map.clone()).unwrap_err().to_string();
    assert!(
        err.contains("unexpected in the file: decoder_embed.bias [5]"),
        "{err}"
    );

    // Initialising a classifier from an MAE checkpoint ignores the decoder and reports it.
    let config = fit_head(toy_config(), &map);
    let (_, report) = load_vit::<B>(
        &config,
        map,
        &LoadPolicy::finetune_init(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.unused, vec!["decoder_embed.bias".to_string()]);
}

#[test]
fn encoder_only_checkpoint_reports_exactly_head_and_fc_norm_missing() {
    let mut map = toy_map();
    map.tensors
        .retain(|k, _| !k.starts_with("head.") && !k.starts_with("fc_norm."));
    let config = toy_config().with_n_classes(7);
    let (_, report) = load_vit::<B>(
        &config,
        map,
        &LoadPolicy::finetune_init(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        report.missing,
        ["fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"]
    );
}

#[test]
fn truncated_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["vit_toy.safetensors", "vit_ti3.pth"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = TensorMap::read(&path).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{name}: {err}");
        assert!(err.contains("cannot read weights"), "{name}: {err}");
    }
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let err = TensorMap::read(&empty).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn export_round_trips_with_timm_names() {
    let device = Default::default();
    let original = toy_map();
    let names: Vec<String> = original.tensors.keys().cloned().collect();
    let model = load(original.clone()).unwrap();

    let meta = HashMap::from([(
        LABELS_KEY.to_string(),
        r#"["a","b","c","d","e"]"#.to_string(),
    )]);
    let bytes = export_safetensors(&model, &meta).unwrap();
    let back = TensorMap::from_safetensors_bytes(&bytes, "export").unwrap();
    assert_eq!(
        back.tensors.keys().cloned().collect::<Vec<_>>(),
        names,
        "timm names"
    );
    for (k, t) in &back.tensors {
        assert_eq!(t.shape, original.tensors[k].shape, "{k}: PyTorch layout");
        assert_eq!(t.data, original.tensors[k].data, "{k}: values");
    }
    assert_eq!(mimic_core::weights::labels_of(&back, 5)[4], "e");

    let reloaded = load(back).unwrap();
    let x = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
    let a = model.forward(x.clone()).into_data();
    reloaded.forward(x).into_data().assert_eq(&a, true);
}

#[test]
fn rewritten_file_with_bad_shape_fails_from_disk_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut map = toy_map();
    let pos = map.tensors.get_mut("pos_embed").unwrap();
    pos.shape = vec![1, 16, 64]; // no room for the cls row
    pos.data.truncate(16 * 64);
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, to_bytes(&map)).unwrap();
    let err = load(TensorMap::read(&path).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.safetensors") && err.contains("pos_embed"),
        "{err}"
    );
}

#[test]
fn pickle_that_calls_code_is_refused_not_run() {
    // hostile.pth unpickled by Python would run `touch /tmp/mimic-pickle-ran`.
    let marker = std::path::Path::new("/tmp/mimic-pickle-ran");
    let _ = std::fs::remove_file(marker);
    let err = TensorMap::read(&fixture("hostile.pth"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hostile.pth") && err.contains("refused"),
        "{err}"
    );
    assert!(
        err.contains("system"),
        "the offending global is named: {err}"
    );
    assert!(!marker.exists(), "nothing in the file may run");
}

#[test]
fn equal_weights_and_metadata_give_equal_bytes() {
    // The metadata comes from a HashMap, whose order differs between maps; exports are sorted.
    let device = Default::default();
    let model = toy_config().init::<B>(&device).unwrap();
    let meta = || -> std::collections::HashMap<String, String> {
        (0..8)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect()
    };
    let a = mimic_core::weights::export_safetensors(&model, &meta()).unwrap();
    for _ in 0..4 {
        assert_eq!(
            a,
            mimic_core::weights::export_safetensors(&model, &meta()).unwrap()
        );
    }
    let map = TensorMap::from_safetensors_bytes(&a, "sorted").unwrap();
    assert_eq!(map.metadata.len(), 8);
    assert_eq!(map.metadata["key3"], "value 3");
}
