//! `train-native`: the mimic trainer and tools.
//!
//! ```text
//! cargo run -p train-native --release -- predict --model vit_toy_patch8_32 \
//!     --weights tests/fixtures/vit_toy.safetensors --image tests/fixtures/face32.png
//! cargo run -p train-native --release -- bench --model vit_cpu_patch6_48 --batch 32
//! ```
//!
//! Exit codes: 0 success, 1 a failure (the cause chain is printed), 2 bad command-line usage.

mod backend;
mod cmd;
mod pipeline;
mod plot;
mod progress;
mod resume;
mod run;
mod settings;
mod tsne;

use clap::{Parser, Subcommand};

// burn-flex allocates and frees a buffer per tensor operation; mimalloc reuses them where the
// system allocator maps and zeroes fresh pages (measured: inference 1.7x, the MIMIC step
// 1.15-1.25x faster; BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of handing it back to the OS after mimalloc's purge delay.
/// A training step frees and reallocates hundreds of MiB of activations; with purging on,
/// steps faulted them back in and the kernel zeroed every page again (measured: ~70,000 page
/// faults and ~15 % of the MIMIC step's samples in `clear_page`; without purging, under
/// 1,000). The cost: the peak stays resident between steps, which a training process holds
/// anyway. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn keep_freed_memory() {
    // SAFETY: plain option accessors of the linked mimalloc: integer arguments, no caller
    // memory touched.
    unsafe {
        // The option's index is that of mimalloc 3 (version 3xxyy); under another major
        // version leave it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && libmimalloc_sys::mi_version() / 10_000 == 3
        {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

/// MIMIC facial-expression training: masked-image pre-training and mix-supervised
/// contrastive fine-tuning of Vision Transformers.
#[derive(Parser, Debug)]
#[command(name = "train-native", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fine-tune a ViT with MIMIC (CE + mix-supervised contrastive loss) on a FER data set.
    /// With no arguments: the CPU recipe on the FERPlus sample shipped in assets/.
    Finetune(Box<cmd::finetune::Args>),
    /// MAE pre-training of the encoder on a folder of images (no labels needed); writes the
    /// encoder checkpoint that `finetune --init` takes.
    Pretrain(Box<cmd::pretrain::Args>),
    /// Run a grid of fine-tuning configurations over several seeds; writes a markdown table.
    Ablate(cmd::ablate::Args),
    /// Evaluate a checkpoint on a split: accuracy, per-class accuracy, confusion matrix.
    Eval(cmd::eval::Args),
    /// Classify one image with a checkpoint and print the top classes.
    Predict(cmd::predict::Args),
    /// List the tensors of a weight file: names, shapes, dtypes.
    Inspect(cmd::inspect::Args),
    /// Measure forward, forward+backward and optimizer-step throughput of a preset.
    Bench(cmd::bench::Args),
    /// Encoder features of a split, their seeded t-SNE map (PNG + JSON) and class-separation
    /// scores, for one checkpoint or several side by side.
    Embed(Box<cmd::embed::Args>),
    /// A grid of Mixup / CutMix samples with their soft labels and positive/negative status
    /// against an anchor, made by the training code.
    MixExamples(Box<cmd::mix_examples::Args>),
    /// Write a fine-tuned checkpoint as the page's compact weights (f16 or int8) and its
    /// manifest (configuration, class names, reported test accuracy).
    ExportWeb(cmd::export_web::Args),
    /// Draw the loss, accuracy and learning-rate curves of a run directory as a PNG.
    Plot(cmd::plot_run::Args),
    /// List the model presets.
    Presets,
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Finetune(args) => cmd::finetune::run(*args),
        Command::Pretrain(args) => cmd::pretrain::run(*args),
        Command::Ablate(args) => cmd::ablate::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Embed(args) => cmd::embed::run(*args),
        Command::MixExamples(args) => cmd::mix_examples::run(*args),
        Command::Plot(args) => cmd::plot_run::run(args),
        Command::ExportWeb(args) => cmd::export_web::run(args),
        Command::Presets => {
            for p in mimic_core::model::PRESETS {
                println!("{:<24} {}", p.name, p.about);
            }
            Ok(())
        }
    };
    if let Err(err) = result {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
