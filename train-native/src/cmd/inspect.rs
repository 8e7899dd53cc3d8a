use std::path::PathBuf;

use anyhow::{Context, Result};
use mimic_core::weights::TensorMap;

/// Arguments of `inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `.safetensors`, `.pth` or `.pt` weight file.
    pub weights: PathBuf,
}

/// Prints every tensor with shape and dtype, then totals and metadata.
pub fn run(args: Args) -> Result<()> {
    let map = TensorMap::read(&args.weights)
        .with_context(|| format!("cannot inspect {}", args.weights.display()))?;
    for note in &map.notes {
        println!("# {note}");
    }
    let width = map.tensors.keys().map(|k| k.len()).max().unwrap_or(0);
    let mut total = 0usize;
    for (name, t) in &map.tensors {
        let n: usize = t.shape.iter().product();
        total += n;
        println!("{name:<width$}  {:<6} {:?}", t.dtype, t.shape);
    }
    println!(
        "{} tensors, {} values ({:.2} M)",
        map.len(),
        total,
        total as f64 / 1e6
    );
    for (k, v) in &map.metadata {
        println!("metadata {k} = {v}");
    }
    Ok(())
}
