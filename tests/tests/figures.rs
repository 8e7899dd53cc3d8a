//! The figure commands end to end: `embed` (features, seeded t-SNE, separation scores, PNG),
//! `mix-examples` (checked cell by cell against the shared mixing function of core) and
//! `plot` (training curves of fine-tuning and pre-training runs, and its errors).

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::Tensor;
use mimic_core::data::{
    decode_all, load_split, unlabelled_images, DatasetKind, FerPlusMode, ImageSource, LoadOptions,
};
use mimic_core::mix::{mix_sample, LabelMetric, MixPlan};
use mimic_tests::{fixture, train_native};
use safetensors::SafeTensors;

fn run<A: AsRef<OsStr>>(args: &[A]) -> (bool, String, String) {
    let out = train_native()
        .args(args)
        .output()
        .expect("train-native runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 output");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Runs a command that must succeed and returns its standard output.
fn ok<A: AsRef<OsStr> + Debug>(args: &[A]) -> String {
    let (success, stdout, stderr) = run(args);
    assert!(success, "{args:?} failed:\n{stderr}\n{stdout}");
    stdout
}

/// Runs a command that must fail cleanly (exit code 1, no panic) and returns its stderr.
fn fails<A: AsRef<OsStr> + Debug>(args: &[A]) -> String {
    let (success, _, stderr) = run(args);
    assert!(!success, "{args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "a panic, not an error:\n{stderr}"
    );
    stderr
}

fn sample_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/ferplus-sample")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// Width and height from a PNG's header chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The fixture ViT (timm layout, random init) that `embed` reads with `--model`.
fn toy_fixture() -> Vec<String> {
    let weights = fixture("vit_toy.safetensors");
    ["--weights", s(&weights), "--model", "vit_toy_patch8_32"]
        .map(String::from)
        .to_vec()
}

/// A `folder` data set of real faces from the sample's training images: the `n` darkest
/// and the `n` brightest (by mean grey level), in two classes. With `interleaved`, the same
/// images are dealt alternately into two classes instead, so the classes mean nothing.
fn bright_and_dark_faces(root: &Path, n: usize, interleaved: bool) {
    let split =
        unlabelled_images(&sample_root().join("FER2013Train"), &LoadOptions::default()).unwrap();
    let images = decode_all(&split.samples, 2).unwrap();
    let mut by_mean: Vec<(f64, usize)> = images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let sum: u64 = img.pixels.iter().map(|&v| v as u64).sum();
            (sum as f64 / img.pixels.len() as f64, i)
        })
        .collect();
    by_mean.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let chosen = by_mean[..n].iter().chain(&by_mean[by_mean.len() - n..]);
    for (k, &(_, i)) in chosen.enumerate() {
        let class = match (interleaved, k < n) {
            (false, true) => "dark",
            (false, false) => "bright",
            (true, _) => ["group0", "group1"][k % 2],
        };
        let ImageSource::File(path) = &split.samples[i].source else {
            panic!("sample images are files");
        };
        let dir = root.join("test").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

fn embed_folder(data: &Path, out: &Path, seed: &str) -> serde_json::Value {
    let mut args: Vec<String> = ["embed", "--dataset", "folder", "--split", "test"]
        .map(String::from)
        .to_vec();
    args.extend(toy_fixture());
    for (flag, value) in [
        ("--data", s(data)),
        ("--out", s(out)),
        ("--perplexity", "10"),
        ("--seed", seed),
        ("--device", "cpu"),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    let stdout = ok(&args);
    assert!(stdout.contains("kNN-5 accuracy"), "{stdout}");
    read_json(&out.join("tsne.json"))
}

fn score(json: &serde_json::Value, key: &str) -> f64 {
    json["panels"][0][key].as_f64().expect("a score")
}

#[test]
fn tsne_of_dark_and_bright_faces_is_reproducible_and_keeps_them_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (data, control) = (dir.path().join("faces"), dir.path().join("control"));
    bright_and_dark_faces(&data, 40, false);
    bright_and_dark_faces(&control, 40, true);

    // The same seed gives the same points, bit for bit (the JSON holds each f32 exactly).
    let a = embed_folder(&data, &dir.path().join("a"), "0");
    let b = embed_folder(&data, &dir.path().join("b"), "0");
    let c = embed_folder(&data, &dir.path().join("c"), "1");
    let points = |j: &serde_json::Value| j["panels"][0]["points"].clone();
    assert_eq!(points(&a).as_array().unwrap().len(), 80);
    assert_eq!(points(&a), points(&b), "same seed, same map");
    assert_ne!(points(&a), points(&c), "the seed is used");
    let csv = |d: &str| std::fs::read(dir.path().join(d).join("embeddings.csv")).unwrap();
    assert_eq!(
        csv("a"),
        csv("c"),
        "features do not depend on the t-SNE seed"
    );

    // Mean grey level below ~60 against above ~195: even the random-init fixture encoder
    // maps them to two clusters. Measured for seeds 0-2: kNN 100 %, silhouette 0.81-0.82;
    // the same 80 images dealt alternately into two classes score about chance (~50 %) and
    // a silhouette near 0. The bounds sit between the two.
    for j in [&a, &c] {
        let (knn, sil) = (score(j, "knn_accuracy"), score(j, "silhouette"));
        assert!(knn >= 0.95 && sil >= 0.5, "kNN {knn}, silhouette {sil}");
    }
    let mixed = embed_folder(&control, &dir.path().join("d"), "0");
    let (knn, sil) = (score(&mixed, "knn_accuracy"), score(&mixed, "silhouette"));
    assert!(
        knn <= 0.75 && sil <= 0.2,
        "meaningless classes: kNN {knn}, silhouette {sil}"
    );
}

#[test]
fn embed_web_writes_the_pages_features_and_thumbnails_in_point_order() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("faces"), dir.path().join("web"));
    bright_and_dark_faces(&data, 20, false);
    let mut args: Vec<String> = ["embed", "--dataset", "folder", "--split", "test", "--web"]
        .map(String::from)
        .to_vec();
    args.extend(toy_fixture());
    let flags = [
        ("--data", s(&data)),
        ("--out", s(&out)),
        ("--perplexity", "5"),
    ];
    for (flag, value) in flags.into_iter().chain([("--device", "cpu")]) {
        args.extend([flag.to_string(), value.to_string()]);
    }
    ok(&args);

    let json = read_json(&out.join("tsne.json"));
    let n = json["panels"][0]["points"].as_array().unwrap().len();
    let web = &json["web"];
    let dim = web["dim"].as_u64().unwrap() as usize;
    let features = std::fs::read(out.join(web["features"].as_str().unwrap())).unwrap();
    assert_eq!(features.len(), n * dim, "one int8 row per point");
    // Rows are unit vectors times 127, up to rounding.
    for row in features.chunks(dim) {
        let norm = row
            .iter()
            .map(|&b| (b as i8 as f32).powi(2))
            .sum::<f32>()
            .sqrt();
        assert!(
            (norm - 127.0).abs() < 0.5 * (dim as f32).sqrt(),
            "row norm {norm}"
        );
    }
    // 40 thumbnails of 48 pixels, 32 a row: two rows, the second partly empty.
    let sprite = out.join(web["sprite"].as_str().unwrap());
    assert_eq!(png_size(&sprite), (32 * 48, 2 * 48));
}

#[test]
fn finetune_then_embed_and_plot_on_the_ferplus_sample() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("ft");
    ok(&[
        "finetune",
        "--model",
        "vit_toy_patch8_32",
        "--max-steps",
        "3",
        "--batch",
        "8",
        "--log-every",
        "1",
        "--out",
        s(&runs),
        "--device",
        "cpu",
    ]);
    let best = runs.join("best.safetensors");

    // 100 of the 355 labelled test images, evenly spaced.
    let out = dir.path().join("embed");
    let stdout = ok(&[
        "embed",
        "--weights",
        s(&best),
        "--dataset",
        "ferplus",
        "--data",
        s(&sample_root()),
        "--split",
        "test",
        "--max-images",
        "100",
        "--perplexity",
        "20",
        "--out",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert!(stdout.contains("embedding 100 of 355 images"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("embeddings.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 101, "a header and one row per image");
    assert!(lines[0].starts_with("id,label,f0,f1,") && lines[0].ends_with(",f63"));
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 2 + 64));

    let json = read_json(&out.join("tsne.json"));
    let points = json["panels"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 100);
    assert_eq!(json["classes"].as_array().unwrap().len(), 8);
    assert_eq!(json["settings"]["perplexity"], 20.0);
    let mut ids: Vec<&str> = points.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids[0],
        lines[1].split(',').next().unwrap(),
        "same order as the CSV"
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100, "distinct images");
    assert!(points
        .iter()
        .all(|p| p["x"].as_f64().unwrap().is_finite() && p["class"].as_u64().unwrap() < 8));
    let knn = json["panels"][0]["knn_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&knn));
    // One panel of 500 px and the legend column, 584 px high (see cmd/embed.rs).
    assert_eq!(png_size(&out.join("tsne.png")), (730, 584));

    let stdout = ok(&["plot", s(&runs)]);
    assert!(
        stdout.contains("fine-tuning run, 3 steps, 1 epochs"),
        "{stdout}"
    );
    let (w, h) = png_size(&runs.join("curves.png"));
    assert_eq!((w, h), (3 * 510, 442), "loss, accuracy and lr panels");
}

#[test]
fn pretrain_then_plot_and_embed_its_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let mae = dir.path().join("mae");
    ok(&[
        "pretrain",
        "--data",
        s(&sample_root().join("FER2013Valid")),
        "--model",
        "vit_toy_patch8_32",
        "--epochs",
        "2",
        "--batch",
        "32",
        "--val-images",
        "8",
        "--lr",
        "1e-3",
        "--out",
        s(&mae),
        "--device",
        "cpu",
    ]);
    let png = dir.path().join("curves.png");
    let stdout = ok(&["plot", s(&mae), "--out", s(&png)]);
    assert!(stdout.contains("pre-training run"), "{stdout}");
    assert_eq!(
        png_size(&png),
        (3 * 510, 442),
        "loss, held-out loss and lr panels"
    );

    // The encoder checkpoint (no head) and the full one (with the decoder) hold the same
    // encoder: the two panels must agree point for point.
    let out = dir.path().join("embed");
    let list = format!(
        "{},{}",
        s(&mae.join("encoder.safetensors")),
        s(&mae.join("full.safetensors"))
    );
    ok(&[
        "embed",
        "--compare",
        &list,
        "--names",
        "encoder,full",
        "--dataset",
        "ferplus",
        "--data",
        s(&sample_root()),
        "--split",
        "valid",
        "--max-images",
        "90",
        "--perplexity",
        "15",
        "--out",
        s(&out),
        "--device",
        "cpu",
    ]);
    let json = read_json(&out.join("tsne.json"));
    let panels = json["panels"].as_array().unwrap();
    assert_eq!(
        (panels[0]["name"].as_str(), panels[1]["name"].as_str()),
        (Some("encoder"), Some("full"))
    );
    assert_eq!(panels[0]["points"], panels[1]["points"]);
    assert_eq!(panels[0]["points"].as_array().unwrap().len(), 90);
    assert!(
        out.join("embeddings-encoder.csv").exists() && out.join("embeddings-full.csv").exists()
    );
    assert_eq!(png_size(&out.join("tsne.png")), (2 * 500 + 230, 584));
}

#[test]
fn embed_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_root();
    let base = |weights: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "embed",
            "--weights",
            s(weights),
            "--model",
            "vit_toy_patch8_32",
            "--dataset",
            "ferplus",
            "--data",
            s(&data),
            "--out",
            s(&dir.path().join("out")),
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };

    // Too few points for the perplexity: say so and suggest one that works.
    let args = base(&fixture("vit_toy.safetensors"), &["--max-images", "20"]);
    let err = fails(&args);
    assert!(
        err.contains("t-SNE needs more than 3 x perplexity points: 20 points at perplexity 30")
            && err.contains("--perplexity 6"),
        "{err}"
    );

    // A checkpoint whose features are NaN: the first image is named.
    let bytes = std::fs::read(fixture("vit_toy.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let nan: Vec<u8> = std::iter::repeat_n(f32::NAN.to_le_bytes(), 64)
        .flatten()
        .collect();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = if name == "fc_norm.bias" {
                nan.clone()
            } else {
                view.data().to_vec()
            };
            (name, view.dtype(), view.shape().to_vec(), data)
        })
        .collect();
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, sh, data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, sh.clone(), data).unwrap(),
            )
        })
        .collect();
    let broken = dir.path().join("nan.safetensors");
    safetensors::serialize_to_file(views, None, &broken).unwrap();
    let args = base(&broken, &["--max-images", "50", "--perplexity", "5"]);
    let err = fails(&args);
    assert!(
        err.contains("the feature of image fer0032241.png is not finite (NaN"),
        "{err}"
    );

    // An unreadable checkpoint.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let args = base(&junk, &[]);
    let err = fails(&args);
    assert!(
        err.contains("cannot read weights") && err.contains("junk.safetensors"),
        "{err}"
    );
}

#[test]
fn mix_examples_cells_are_what_the_shared_mix_function_gives() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("grid.png");
    let stdout = ok(&[
        "mix-examples",
        "--dataset",
        "ferplus",
        "--data",
        s(&sample_root()),
        "--split",
        "valid",
        "--ferplus-mode",
        "soft",
        "--pairs",
        "2",
        "--lambdas",
        "0.3,0.6",
        "--anchor-lambda",
        "0.75",
        "--threshold",
        "0.4",
        "--out",
        s(&png),
        "--device",
        "cpu",
    ]);
    assert!(stdout.contains("wrote"), "{stdout}");
    let (w, h) = png_size(&png);
    assert!(
        w > 6 * 192 && h > 2 * 192,
        "{w}x{h}: two rows of seven 192-px cells"
    );

    // The vote distributions of the split, by image id, as the data loader gives them.
    let options = LoadOptions {
        ferplus_mode: FerPlusMode::Soft,
        exclude: vec![],
    };
    let split = load_split(
        DatasetKind::parse("ferplus").unwrap(),
        &sample_root(),
        "valid",
        &options,
    )
    .unwrap();
    let target = |id: &str| -> Vec<f32> {
        let sample = split
            .samples
            .iter()
            .find(|s| s.id == id)
            .expect("a sample id");
        sample.target.clone()
    };
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };

    // Every cell again through mimic_core::mix::mix_sample: the same label, distance and
    // decision (labels and decisions do not depend on the pixels, so blank images do).
    let record = read_json(&png.with_extension("json"));
    assert_eq!(record["threshold"], 0.4);
    let device = Default::default();
    let blank = || Tensor::<Flex, 3>::zeros([3, 48, 48], &device);
    let (mut positives, mut negatives) = (0, 0);
    for row in record["rows"].as_array().unwrap() {
        let (a, b) = (
            target(row["first"].as_str().unwrap()),
            target(row["second"].as_str().unwrap()),
        );
        assert_eq!(floats(&row["labels"][0]), a);
        assert_eq!(floats(&row["labels"][1]), b);
        let anchor_plan: MixPlan = serde_json::from_value(row["anchor_plan"].clone()).unwrap();
        assert_eq!(anchor_plan.lambda, 0.75);
        let anchor = mix_sample(
            [blank(), blank()],
            [&a, &b],
            &anchor_plan,
            &a,
            0.4,
            LabelMetric::Linf,
        )
        .label;
        assert_eq!(floats(&row["anchor_label"]), anchor);
        let cells = row["cells"].as_array().unwrap();
        assert_eq!(
            cells.len(),
            1 + 2 + 2 * 2,
            "anchor, A, B, two Mixup and two CutMix"
        );
        for cell in cells {
            let plan: MixPlan = serde_json::from_value(cell["plan"].clone()).unwrap();
            let want = mix_sample(
                [blank(), blank()],
                [&a, &b],
                &plan,
                &anchor,
                0.4,
                LabelMetric::Linf,
            );
            let title = cell["title"].as_str().unwrap();
            assert_eq!(floats(&cell["label"]), want.label, "{title}");
            assert_eq!(
                cell["distance"].as_f64().unwrap() as f32,
                want.distance,
                "{title}"
            );
            assert_eq!(
                cell["positive"].as_bool().unwrap(),
                want.positive,
                "{title}"
            );
            if cell["anchor"] == false {
                if want.positive {
                    positives += 1;
                } else {
                    negatives += 1;
                }
            }
        }
    }
    assert!(
        positives > 0 && negatives > 0,
        "{positives} P, {negatives} N: both kinds shown"
    );
}

#[test]
fn plot_names_the_file_and_line_of_bad_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");

    let err = fails(&["plot", s(dir.path())]);
    assert!(
        err.contains("cannot read") && err.contains("metrics.jsonl"),
        "{err}"
    );

    std::fs::write(&metrics, "\n").unwrap();
    let err = fails(&["plot", s(dir.path())]);
    assert!(err.contains("metrics.jsonl is empty"), "{err}");

    std::fs::write(
        &metrics,
        "{\"step\":1,\"loss\":2.0,\"lr\":0.001}\n{\"step\":2,\"loss\":\n",
    )
    .unwrap();
    let err = fails(&["plot", s(dir.path())]);
    assert!(err.contains("metrics.jsonl:2: not valid JSON"), "{err}");

    std::fs::write(&metrics, "{\"step\":1,\"loss\":2.0}\n[1, 2]\n").unwrap();
    let err = fails(&["plot", s(dir.path())]);
    assert!(
        err.contains("metrics.jsonl:2: expected a JSON object"),
        "{err}"
    );
}
