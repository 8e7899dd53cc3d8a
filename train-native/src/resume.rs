//! Resume points: after every epoch a run writes the model, the optimiser state and the loop
//! counters into `resume-<epoch>/`, then points `resume.json` at it (an atomic rename), so a
//! run killed at any moment resumes from its last complete epoch. Everything else a step
//! depends on (data order, augmentation, masking, mixing, stochastic depth) is derived from
//! the seed and the step number, so the resumed run continues bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use mimic_core::backend::AutodiffBackend;
use mimic_core::train::GroupedOptimizer;
use mimic_core::weights::{save_safetensors, write_atomic, VisitParams};
use serde::{Deserialize, Serialize};

use crate::run::write_json;

/// The loop counters at the end of an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    /// The last completed epoch (0-based).
    pub epoch: usize,
    /// Optimisation steps done.
    pub step: usize,
    /// Best validation score so far (accuracy; unused by pre-training).
    pub best: f64,
    /// Epoch of the best score.
    pub best_epoch: usize,
    /// Length of `metrics.jsonl` at this point; later lines are dropped on resume.
    pub metrics_len: u64,
    /// Training images seen.
    pub images_seen: usize,
    /// Training seconds spent so far.
    pub train_seconds: f64,
}

/// What a resume point holds on disk.
pub struct ResumePoint {
    /// The model weights (safetensors, timm names).
    pub model: PathBuf,
    /// The optimiser state bytes.
    pub optimizer: Vec<u8>,
    /// The counters.
    pub state: ResumeState,
}

#[derive(Serialize, Deserialize)]
struct Pointer {
    point: String,
}

/// Writes a resume point for `state` into `run` and makes it the current one.
pub fn save<B: AutodiffBackend, M: AutodiffModule<B> + VisitParams<B> + Clone>(
    run: &Path,
    model: &M,
    meta: &HashMap<String, String>,
    optim: &GroupedOptimizer<M, B>,
    state: &ResumeState,
) -> Result<()> {
    let name = format!("resume-{:04}", state.epoch);
    let dir = run.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    save_safetensors(model, meta, &dir.join("model.safetensors"))
        .with_context(|| format!("cannot write {}", dir.display()))?;
    write_atomic(&dir.join("optimizer.bin"), &optim.state_bytes())
        .with_context(|| format!("cannot write {}", dir.display()))?;
    write_json(&dir.join("state.json"), state)?;
    // The pointer is replaced last: until then the previous point stays the current one.
    write_json(
        &run.join("resume.json"),
        &Pointer {
            point: name.clone(),
        },
    )?;
    for entry in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let other = entry.file_name().to_string_lossy().to_string();
        if other.starts_with("resume-") && other != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Reads the current resume point of `run`.
pub fn load(run: &Path) -> Result<ResumePoint> {
    if run.join("report.json").exists() {
        bail!(
            "--resume {}: the run is finished (report.json exists); nothing to resume",
            run.display()
        );
    }
    let pointer_path = run.join("resume.json");
    let text = std::fs::read_to_string(&pointer_path).with_context(|| {
        format!(
            "--resume {}: no resume point (resume.json); a run writes one after its first epoch",
            run.display()
        )
    })?;
    let pointer: Pointer = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a resume pointer", pointer_path.display()))?;
    if pointer.point.contains(['/', '\\']) || pointer.point.starts_with('.') {
        bail!("{}: bad resume point name", pointer_path.display());
    }
    let dir = run.join(&pointer.point);
    let state_path = dir.join("state.json");
    let state: ResumeState = serde_json::from_str(
        &std::fs::read_to_string(&state_path)
            .with_context(|| format!("cannot read {}", state_path.display()))?,
    )
    .with_context(|| format!("{}: bad resume state", state_path.display()))?;
    let optimizer_path = dir.join("optimizer.bin");
    let optimizer = std::fs::read(&optimizer_path)
        .with_context(|| format!("cannot read {}", optimizer_path.display()))?;
    Ok(ResumePoint {
        model: dir.join("model.safetensors"),
        optimizer,
        state,
    })
}
