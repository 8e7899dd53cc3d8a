//! One module per subcommand: its clap arguments and its `run`.

pub mod ablate;
pub mod bench;
pub mod embed;
pub mod eval;
pub mod export_web;
pub mod finetune;
pub mod inspect;
pub mod mix_examples;
pub mod plot_run;
pub mod predict;
pub mod pretrain;
