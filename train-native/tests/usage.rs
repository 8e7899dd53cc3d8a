//! Command-line usage of the binary itself. (The end-to-end runs live in the `mimic-tests`
//! package; having an integration test here also makes `cargo test --workspace` build the
//! `train-native` binary those tests call.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_train-native"))
}

#[test]
fn presets_lists_every_preset() {
    let out = bin().arg("presets").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for p in mimic_core::model::PRESETS {
        assert!(text.contains(p.name), "{} missing from:\n{text}", p.name);
    }
}

#[test]
fn bad_usage_exits_2_and_names_the_flag() {
    let out = bin().args(["bench", "--device", "tpu"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--device") && err.contains("tpu"), "{err}");
}
