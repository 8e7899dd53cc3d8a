use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mimic_core::weights::write_atomic;

use crate::backend::{dispatch, DeviceKind};
use crate::cmd::finetune::{utc_stamp, RunSummary, SAMPLE_DATA};
use crate::settings::FinetuneFlags;

/// Arguments of `ablate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML grid: `seeds = [..]`, a `[base]` table of finetune settings, and `[[run]]` tables
    /// each with a `name` and the settings that differ (e.g. `loss = "ce"`).
    #[arg(long)]
    pub grid: PathBuf,
    /// Output directory: one run directory per (run, seed) and `ablation.md`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Backend to run on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
}

struct GridRun {
    name: String,
    flags: FinetuneFlags,
    described: String,
}

/// Runs every configuration of the grid with every seed and writes a markdown table of
/// mean ± standard deviation of the validation and test accuracies.
pub fn run(args: Args) -> Result<()> {
    let path = &args.grid;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("invalid TOML in {}", path.display()))?;
    let ctx = |what: &str| format!("{}: {what}", path.display());

    let mut seeds = vec![0u64];
    let mut base = FinetuneFlags::default();
    let mut runs = Vec::new();
    for (key, value) in table {
        match key.as_str() {
            "seeds" => {
                seeds = value
                    .try_into()
                    .with_context(|| ctx("seeds must be a list of integers"))?
            }
            "base" => base = value.try_into().with_context(|| ctx("invalid [base]"))?,
            "run" => {
                let list = value
                    .as_array()
                    .cloned()
                    .with_context(|| ctx("use [[run]] tables"))?;
                for (i, item) in list.into_iter().enumerate() {
                    let mut t = item
                        .as_table()
                        .cloned()
                        .with_context(|| ctx("a [[run]] is not a table"))?;
                    let name = match t.remove("name") {
                        Some(toml::Value::String(s)) => s,
                        _ => bail!(
                            "{}: [[run]] number {} needs a name = \"...\"",
                            path.display(),
                            i + 1
                        ),
                    };
                    let described = t
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let flags: FinetuneFlags = toml::Value::Table(t)
                        .try_into()
                        .with_context(|| ctx(&format!("invalid settings in run '{name}'")))?;
                    runs.push(GridRun {
                        name,
                        flags,
                        described,
                    });
                }
            }
            other => bail!(
                "{}: unknown key '{other}' (expected seeds, base, run)",
                path.display()
            ),
        }
    }
    if runs.is_empty() || seeds.is_empty() {
        bail!(
            "{}: the grid needs at least one [[run]] and one seed",
            path.display()
        );
    }

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/ablate-{}", utc_stamp())));
    let mut rows = Vec::new();
    for run in &runs {
        let mut results: Vec<RunSummary> = Vec::new();
        for &seed in &seeds {
            let mut flags = base.clone().overridden_by(run.flags.clone());
            flags.seed = Some(seed);
            flags.out = Some(out.join(format!("{}-seed{seed}", slug(&run.name))));
            let config = flags
                .resolve(&PathBuf::from(SAMPLE_DATA), &utc_stamp())
                .with_context(|| format!("run '{}'", run.name))?;
            println!("== ablate: {} (seed {seed})", run.name);
            results.push(
                dispatch(args.device, config)
                    .with_context(|| format!("run '{}' seed {seed}", run.name))?,
            );
        }
        rows.push((run, results));
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "| run | settings | seeds | validation accuracy (%) | test accuracy (%) | train time (s) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (run, results) in &rows {
        let val: Vec<f64> = results.iter().map(|r| 100.0 * r.val_accuracy).collect();
        let test: Vec<f64> = results
            .iter()
            .filter_map(|r| r.test_accuracy.map(|a| 100.0 * a))
            .collect();
        let secs: Vec<f64> = results.iter().map(|r| r.train_seconds).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} |",
            run.name,
            if run.described.is_empty() {
                "base".into()
            } else {
                run.described.clone()
            },
            results.len(),
            mean_std(&val),
            if test.is_empty() {
                "-".into()
            } else {
                mean_std(&test)
            },
            secs.iter().sum::<f64>() / secs.len() as f64,
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let table_path = out.join("ablation.md");
    write_atomic(&table_path, md.as_bytes())?;
    print!("{md}");
    println!("table written to {}", table_path.display());
    Ok(())
}

/// `mean ± sample standard deviation` with two decimals (`± 0` for one value).
fn mean_std(v: &[f64]) -> String {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    format!("{mean:.2} ± {:.2}", var.sqrt())
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_spread() {
        assert_eq!(mean_std(&[80.0]), "80.00 ± 0.00");
        assert_eq!(mean_std(&[1.0, 3.0]), "2.00 ± 1.41");
        assert_eq!(slug("CE + MSCL"), "ce---mscl");
    }
}
