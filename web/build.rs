//! Finds the SeetaFace frontal model that ships inside the rustface crate (crates.io package
//! rustface 0.1.7, `model/seeta_fd_frontal_v1.0.bin`, BSD-2-Clause) and copies it to OUT_DIR,
//! where `face.rs` embeds it. `MIMIC_FACE_MODEL=<path>` points at another copy (for vendored
//! or offline registries laid out differently).

use std::path::{Path, PathBuf};

const CRATE_DIR: &str = "rustface-0.1.7";
const MODEL: &str = "model/seeta_fd_frontal_v1.0.bin";

fn main() {
    println!("cargo:rerun-if-env-changed=MIMIC_FACE_MODEL");
    let found = std::env::var_os("MIMIC_FACE_MODEL")
        .map(PathBuf::from)
        .or_else(find_in_registry);
    let Some(model) = found.filter(|p| p.is_file()) else {
        panic!(
            "cannot find {MODEL} of the rustface crate in the cargo registry; \
             set MIMIC_FACE_MODEL to the file's path"
        );
    };
    println!("cargo:rerun-if-changed={}", model.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy(&model, out.join("seeta_fd_frontal_v1.0.bin"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", model.display()));
}

fn find_in_registry() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let sources = std::fs::read_dir(home.join("registry").join("src")).ok()?;
    sources
        .flatten()
        .map(|index| index.path().join(CRATE_DIR).join(MODEL))
        .find(|p| p.is_file())
}
