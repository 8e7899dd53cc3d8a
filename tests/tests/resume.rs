//! Kill and resume: a `finetune` or `pretrain` run killed with SIGKILL in the middle of an
//! epoch and resumed with `--resume` ends with bit-identical weights and the same metrics as an
//! uninterrupted run (CPU backend); broken resume points are refused with the file named.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mimic_core::weights::TensorMap;
use mimic_tests::{run_cli, train_native};

/// Starts `args` writing to `out` and kills it with SIGKILL shortly after its first resume
/// point appears; fails if the run finished before it could be killed.
fn start_and_kill(args: &[&str], out: &Path) {
    let mut child: Child = train_native()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("train-native starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.join("resume.json").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first epoch"
        );
        assert!(Instant::now() < deadline, "no resume point after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Into the next epoch, so that the killed run leaves partial work behind.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run finished before it could be killed; give it more epochs"
    );
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let _ = child.wait();
}

/// Every tensor bit for bit, and the metadata; and so the same file bytes.
fn assert_same_weights(a: &Path, b: &Path) {
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    let same_bytes = bytes(a) == bytes(b);
    let (a, b) = (TensorMap::read(a).unwrap(), TensorMap::read(b).unwrap());
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        assert_eq!(t.shape, u.shape, "{name}");
        let same = t
            .data
            .iter()
            .zip(&u.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} differs after resuming");
    }
    assert!(
        same_bytes,
        "equal tensors and metadata, but the files differ"
    );
}

/// metrics.jsonl without the timing fields, which differ between any two runs.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("images_per_s");
            v
        })
        .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `command` with `settings` into `<dir>/a` uninterrupted; runs it again into `<dir>/b`,
/// kills that run with SIGKILL mid-way and resumes it. Returns both run directories and what
/// the resumed run printed.
fn uninterrupted_and_resumed(
    command: &str,
    settings: &[&str],
    dir: &Path,
) -> (PathBuf, PathBuf, String) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    let with_out = |out: &Path| -> Vec<String> {
        std::iter::once(command)
            .chain(settings.iter().copied())
            .chain(["--device", "cpu", "--out", out.to_str().unwrap()])
            .map(str::to_string)
            .collect()
    };
    let (ok, stdout, stderr) = run_cli(&as_strs(&with_out(&a)));
    assert!(ok, "{stderr}\n{stdout}");

    start_and_kill(&as_strs(&with_out(&b)), &b);
    assert!(
        !b.join("report.json").exists(),
        "the killed run had not finished"
    );
    let (ok, stdout, stderr) =
        run_cli(&[command, "--resume", b.to_str().unwrap(), "--device", "cpu"]);
    assert!(ok, "{stderr}\n{stdout}");
    (a, b, stdout)
}

#[test]
fn killed_finetune_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        "--model",
        "vit_toy_patch8_32",
        "--epochs",
        "4",
        "--batch",
        "64",
        "--drop-path",
        "0.1",
        "--log-every",
        "5",
    ];
    let (a, b, stdout) = uninterrupted_and_resumed("finetune", &settings, dir.path());
    assert!(stdout.contains("resuming after epoch"), "{stdout}");

    for f in ["last.safetensors", "best.safetensors"] {
        assert_same_weights(&a.join(f), &b.join(f));
    }
    assert_eq!(metrics(&a), metrics(&b), "metrics after resuming");
    let report = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap()
    };
    assert_eq!(report(&a)["test"], report(&b)["test"]);
    assert_eq!(report(&a)["steps"], report(&b)["steps"]);
}

#[test]
fn killed_pretrain_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/ferplus-sample/FER2013Train");
    let settings = [
        "--model",
        "vit_toy_patch8_32",
        "--epochs",
        "4",
        "--batch",
        "64",
        "--lr",
        "1e-3",
        "--recon-every",
        "2",
        "--log-every",
        "5",
        "--data",
        data.to_str().unwrap(),
    ];
    let (a, b, _) = uninterrupted_and_resumed("pretrain", &settings, dir.path());
    for f in ["full.safetensors", "encoder.safetensors"] {
        assert_same_weights(&a.join(f), &b.join(f));
    }
    assert_eq!(metrics(&a), metrics(&b), "metrics after resuming");
}

#[test]
fn broken_resume_points_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let (ok, _, stderr) = run_cli(&["finetune", "--resume", out_s]);
    assert!(!ok && stderr.contains("config.json"), "{stderr}");

    let (ok, stdout, stderr) = run_cli(&[
        "finetune",
        "--model",
        "vit_toy_patch8_32",
        "--epochs",
        "1",
        "--batch",
        "64",
        "--out",
        out_s,
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}\n{stdout}");
    // Other settings with --resume would not continue the same run.
    let (ok, _, stderr) = run_cli(&["finetune", "--resume", out_s, "--lr", "1"]);
    assert!(
        !ok && stderr.contains("--resume takes every setting"),
        "{stderr}"
    );
    // A finished run is not resumed (its report would be rewritten).
    let (ok, _, stderr) = run_cli(&["finetune", "--resume", out_s, "--device", "cpu"]);
    assert!(!ok && stderr.contains("the run is finished"), "{stderr}");
    std::fs::remove_file(out.join("report.json")).unwrap(); // as if killed after the last epoch

    // A corrupted optimiser state is named, not loaded.
    let point = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("resume-"))
        .expect("a resume point")
        .path();
    let opt = point.join("optimizer.bin");
    let mut bytes = std::fs::read(&opt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&opt, &bytes).unwrap();
    let (ok, _, stderr) = run_cli(&["finetune", "--resume", out_s, "--device", "cpu"]);
    assert!(!ok && stderr.contains("checksum"), "{stderr}");
    std::fs::write(&opt, &bytes[..10]).unwrap();
    let (ok, _, stderr) = run_cli(&["finetune", "--resume", out_s, "--device", "cpu"]);
    assert!(!ok && stderr.contains("truncated"), "{stderr}");
    std::fs::remove_file(out.join("resume.json")).unwrap();
    let (ok, _, stderr) = run_cli(&["finetune", "--resume", out_s, "--device", "cpu"]);
    assert!(!ok && stderr.contains("no resume point"), "{stderr}");
}
