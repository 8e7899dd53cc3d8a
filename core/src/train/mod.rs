//! Training pieces shared by every loop: the fine-tuning model and its loss step, parameter
//! groups with layer-wise lr decay, the lr schedule and classification metrics. The epoch loop,
//! checkpoints and logging live in the binaries.

mod finetune;
mod metrics;
mod optim;
mod schedule;
mod step;

pub(crate) use optim::fnv1a;

pub use finetune::{
    finetune_loss, LossKind, MimicLossConfig, MimicModel, ProjKind, ProjectionHead, StepLosses,
};
pub use metrics::ConfusionMatrix;
pub use optim::{
    layer_decay_groups, layer_id, GroupedOptimizer, OptimKind, OptimizerConfig, ParamGroup,
};
pub use schedule::CosineSchedule;
pub use step::{finetune_gradients, mae_gradients, StepGradients};
