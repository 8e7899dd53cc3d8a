//! One module per subcommand: its clap arguments and its `run`.

pub mod bench;
pub mod inspect;
pub mod predict;
