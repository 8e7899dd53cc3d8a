//! The `train-native` binary as a user runs it: predict, inspect, bench, and its errors.

use mimic_tests::{assert_close, fixture, floats, reference, run_cli};

/// `predict --json` of the toy timm model with `weights` on the fixture face.
fn predict_toy(weights: &std::path::Path) -> serde_json::Value {
    let image = fixture("face32.png");
    let (ok, stdout, stderr) = run_cli(&[
        "predict",
        "--model",
        "vit_toy_patch8_32",
        "--device",
        "cpu",
        "--json",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn predict_json_gives_timms_logits() {
    let v = predict_toy(&fixture("vit_toy.safetensors"));
    let r = reference();
    assert_close(
        &floats(&v["logits"]),
        &floats(&r["toy"]["logits"]),
        1e-5,
        "CLI logits",
    );
    let probs = floats(&v["probs"]);
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_eq!(v["labels"].as_array().unwrap().len(), 5);
}

#[test]
fn predict_resizes_and_converts_grey_images() {
    // A 48x48 grey FERPlus-like PNG into a 32 px RGB model: decoded, replicated, resized.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grey.png");
    let img = image_gray(48);
    std::fs::write(&path, img).unwrap();
    let weights = fixture("vit_toy.safetensors");
    let (ok, stdout, stderr) = run_cli(&[
        "predict",
        "--model",
        "vit_toy_patch8_32",
        "--device",
        "cpu",
        "--top",
        "2",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" %")).count(),
        2,
        "{stdout}"
    );
}

/// A small grey PNG written by hand (stored blocks, no compression library needed).
fn image_gray(side: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..side {
        raw.push(0u8); // filter: none
        raw.extend((0..side).map(|x| ((x * 5 + y * 3) % 256) as u8));
    }
    png_bytes(side as u32, side as u32, 0, &raw)
}

fn png_bytes(w: u32, h: u32, color_type: u8, raw: &[u8]) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc(&body).to_be_bytes());
    }
    // zlib stream with stored (uncompressed) deflate blocks.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend(*b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, color_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn predict_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_image = dir.path().join("notes.png");
    std::fs::write(&not_image, b"this is not an image").unwrap();
    let weights = fixture("vit_toy.safetensors");
    let (ok, _, stderr) = run_cli(&[
        "predict",
        "--model",
        "vit_toy_patch8_32",
        "--device",
        "cpu",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        not_image.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("notes.png") && stderr.contains("cannot decode"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A checkpoint of another preset: every mismatch is listed, nothing runs.
    let image = fixture("face224.png");
    let (ok, _, stderr) = run_cli(&[
        "predict",
        "--model",
        "vit_tiny_patch16_224",
        "--device",
        "cpu",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("wrong shape: patch_embed.proj.weight"),
        "{stderr}"
    );

    let (ok, _, stderr) = run_cli(&[
        "predict",
        "--model",
        "vit_huge",
        "--weights",
        "x",
        "--image",
        "y",
    ]);
    assert!(
        !ok && stderr.contains("unknown model preset 'vit_huge'"),
        "{stderr}"
    );
}

#[test]
fn inspect_lists_tensors_of_pth_and_safetensors() {
    let (ok, stdout, stderr) = run_cli(&["inspect", fixture("vit_ti3.pth").to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("top-level key 'model'"), "{stdout}");
    assert!(stdout.contains("patch_embed.proj.weight") && stdout.contains("[192, 3, 16, 16]"));
    assert!(
        stdout.contains("F16") && stdout.contains("44 tensors"),
        "{stdout}"
    );

    let (ok, stdout, _) = run_cli(&["inspect", fixture("vit_toy.safetensors").to_str().unwrap()]);
    assert!(
        ok && stdout.contains("F32") && stdout.contains("32 tensors"),
        "{stdout}"
    );
}

#[test]
fn bench_prints_figures() {
    let (ok, stdout, stderr) = run_cli(&[
        "bench",
        "--model",
        "vit_toy_patch8_32",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    for what in ["forward", "forward+backward", "optimizer step"] {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(what).filter(|rest| rest.starts_with(' ')))
            .unwrap_or_else(|| panic!("no '{what}' line in {stdout}"));
        let ips: f64 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(ips > 0.0, "{line}");
    }
}

#[test]
fn unavailable_backends_fail_with_one_line() {
    // CI builds the default features (cpu): asking for CUDA must be a clean error either way
    // (no feature, or no driver), never a panic from the driver loader.
    for device in ["cuda", "wgpu"] {
        let (ok, _, stderr) =
            run_cli(&["bench", "--model", "vit_toy_patch8_32", "--device", device]);
        if ok {
            continue; // a machine with that backend and hardware
        }
        assert!(stderr.starts_with("error: --device"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn export_web_writes_compact_weights_that_predict_like_the_checkpoint() {
    let weights = fixture("vit_toy.safetensors");
    let dir = std::env::temp_dir().join(format!("mimic-export-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let predict = |w: &std::path::Path| floats(&predict_toy(w)["probs"]);
    let want = predict(&weights);

    for (dtype, tol) in [("f16", 2e-3), ("int8", 3e-2)] {
        let out = dir.join(dtype);
        let (ok, stdout, stderr) = run_cli(&[
            "export-web",
            "--model",
            "vit_toy_patch8_32",
            "--device",
            "cpu",
            "--dtype",
            dtype,
            "--weights",
            weights.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("same top class 8/8"), "{stdout}");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["dtype"], dtype);
        assert_eq!(manifest["labels"].as_array().unwrap().len(), 5);
        assert!(
            manifest["test_accuracy"].is_null(),
            "no report.json beside the fixture"
        );
        let compact = out.join("model.safetensors");
        let size = std::fs::metadata(&compact).unwrap().len();
        assert_eq!(manifest["weights_bytes"].as_u64(), Some(size));
        assert!(
            size < std::fs::metadata(&weights).unwrap().len() / 2 + 4096,
            "{dtype}: {size}"
        );
        // The compact file is itself a checkpoint the trainer reads back.
        let got = predict(&compact);
        assert_close(&got, &want, tol, &format!("{dtype} probabilities"));
    }

    // A checkpoint without a classification head cannot be exported.
    let (ok, _, stderr) = run_cli(&[
        "export-web",
        "--weights",
        fixture("mae_toy_full.pth").to_str().unwrap(),
        "--out",
        dir.join("bad").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!ok);
    assert!(stderr.contains("mae_toy_full.pth"), "{stderr}");
    assert!(!dir.join("bad").join("model.json").exists());

    // --out naming a file is refused before anything is written.
    let file = dir.join("f16").join("model.json");
    let (ok, _, stderr) = run_cli(&[
        "export-web",
        "--model",
        "vit_toy_patch8_32",
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!ok);
    assert!(stderr.contains("is not a folder"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
