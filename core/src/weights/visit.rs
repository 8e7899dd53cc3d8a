use crate::backend::Backend;
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;

use crate::model::{Attention, Block, Mlp, PatchEmbed, Vit};

/// How a burn parameter's layout relates to the PyTorch tensor of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and order.
    Same,
    /// A linear weight: burn stores `[d_in, d_out]`, PyTorch `[d_out, d_in]`.
    Transposed,
}

/// Receives every parameter of a module with its timm name. Loading, export and key listing
/// all walk models through this one traversal, so names are written once.
pub trait ParamVisitor<B: Backend> {
    /// Called once per parameter, in module order.
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        layout: Layout,
        param: &mut Param<Tensor<B, D>>,
    );
}

/// Modules whose parameters can be walked with timm names.
pub trait VisitParams<B: Backend> {
    /// Calls `visitor` for every parameter, names prefixed by `prefix` (empty for the root).
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, visitor: &mut V);
}

/// `prefix.name`, or `name` at the root: how visitors build timm names.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<B: Backend> VisitParams<B> for Linear<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.visit(
            &join(prefix, "weight"),
            Layout::Transposed,
            &mut self.weight,
        );
        if let Some(bias) = &mut self.bias {
            v.visit(&join(prefix, "bias"), Layout::Same, bias);
        }
    }
}

impl<B: Backend> VisitParams<B> for LayerNorm<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.visit(&join(prefix, "weight"), Layout::Same, &mut self.gamma);
        if let Some(beta) = &mut self.beta {
            v.visit(&join(prefix, "bias"), Layout::Same, beta);
        }
    }
}

impl<B: Backend, M: VisitParams<B>> VisitParams<B> for Option<M> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        if let Some(m) = self {
            m.visit_params(prefix, v);
        }
    }
}

impl<B: Backend, M: VisitParams<B>> VisitParams<B> for Vec<M> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_params(&join(prefix, &i.to_string()), v);
        }
    }
}

impl<B: Backend> VisitParams<B> for PatchEmbed<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        v.visit(&join(prefix, "weight"), Layout::Same, &mut self.weight);
        v.visit(&join(prefix, "bias"), Layout::Same, &mut self.bias);
    }
}

impl<B: Backend> VisitParams<B> for Attention<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.qkv.visit_params(&join(prefix, "qkv"), v);
        self.proj.visit_params(&join(prefix, "proj"), v);
    }
}

impl<B: Backend> VisitParams<B> for Mlp<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.fc1.visit_params(&join(prefix, "fc1"), v);
        self.fc2.visit_params(&join(prefix, "fc2"), v);
    }
}

impl<B: Backend> VisitParams<B> for Block<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.norm1.visit_params(&join(prefix, "norm1"), v);
        self.attn.visit_params(&join(prefix, "attn"), v);
        self.norm2.visit_params(&join(prefix, "norm2"), v);
        self.mlp.visit_params(&join(prefix, "mlp"), v);
    }
}

impl<B: Backend> VisitParams<B> for Vit<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.patch_embed
            .visit_params(&join(prefix, "patch_embed.proj"), v);
        v.visit(
            &join(prefix, "cls_token"),
            Layout::Same,
            &mut self.cls_token,
        );
        v.visit(
            &join(prefix, "pos_embed"),
            Layout::Same,
            &mut self.pos_embed,
        );
        self.blocks.visit_params(&join(prefix, "blocks"), v);
        self.norm.visit_params(&join(prefix, "norm"), v);
        self.fc_norm.visit_params(&join(prefix, "fc_norm"), v);
        self.head.visit_params(&join(prefix, "head"), v);
    }
}

/// Gives every parameter an id derived from its timm name, so that ids (which key optimiser
/// state) are the same in every process that builds the same model: what lets a run resume
/// with its optimiser state.
pub fn assign_stable_ids<B: Backend, M: VisitParams<B>>(module: &mut M) {
    struct Ids;
    impl<B: Backend> ParamVisitor<B> for Ids {
        fn visit<const D: usize>(&mut self, name: &str, _: Layout, p: &mut Param<Tensor<B, D>>) {
            p.id = burn::module::ParamId::from(crate::train::fnv1a(name.as_bytes()));
        }
    }
    module.visit_params("", &mut Ids);
}

/// The name of the first parameter holding a NaN or an infinity, if any: a run checks this
/// before it writes a checkpoint, so a step that produced non-finite gradients (and thus
/// weights) with a finite loss never overwrites a good checkpoint.
pub fn first_non_finite<B: Backend, M: VisitParams<B>>(module: &mut M) -> Option<String> {
    struct Find(Option<String>);
    impl<B: Backend> ParamVisitor<B> for Find {
        fn visit<const D: usize>(&mut self, name: &str, _: Layout, p: &mut Param<Tensor<B, D>>) {
            if self.0.is_none() {
                let finite = burn::tensor::cast::ToElement::to_bool(
                    &p.val().is_finite().all().into_scalar(),
                );
                if !finite {
                    self.0 = Some(name.to_string());
                }
            }
        }
    }
    let mut find = Find(None);
    module.visit_params("", &mut find);
    find.0
}

/// Lists `(name, PyTorch shape)` of every parameter of a module.
pub fn param_shapes<B: Backend, M: VisitParams<B>>(module: &mut M) -> Vec<(String, Vec<usize>)> {
    struct Shapes(Vec<(String, Vec<usize>)>);
    impl<B: Backend> ParamVisitor<B> for Shapes {
        fn visit<const D: usize>(
            &mut self,
            name: &str,
            layout: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            let mut shape = p.lazy_shape().to_vec();
            if layout == Layout::Transposed {
                shape.reverse();
            }
            self.0.push((name.to_string(), shape));
        }
    }
    let mut s = Shapes(Vec::new());
    module.visit_params("", &mut s);
    s.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VitConfig;
    use burn::backend::Flex;

    #[test]
    fn non_finite_parameters_are_named() {
        let device = Default::default();
        let mut model = VitConfig::preset("vit_toy_patch8_32")
            .unwrap()
            .init::<Flex>(&device)
            .unwrap();
        assert_eq!(first_non_finite(&mut model), None);
        let mut values = vec![0.0f32; 64];
        values[7] = f32::INFINITY;
        let bad = Tensor::from_data(burn::tensor::TensorData::new(values, [1, 1, 64]), &device);
        model.cls_token = Param::from_tensor(bad);
        assert_eq!(first_non_finite(&mut model).as_deref(), Some("cls_token"));
    }
}
