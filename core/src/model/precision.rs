//! Mixed precision: the number format of the transformer blocks' matrix products.
//!
//! With [`Precision::Bf16`] the inputs of every large matrix product of a block (the q/k/v and
//! output projections, the two attention products, the MLP's two layers) are rounded to
//! bfloat16 and the product comes back as f32; the parameters, their gradients and the
//! optimiser state stay f32 ("master weights"), and LayerNorm, softmax, GELU, the residual
//! sums, biases and the losses run in f32. This is the split that PyTorch's CUDA autocast makes
//! for bf16. The casts are differentiable, so a product's backward runs in bf16 as well and its
//! gradients come back as f32.
//!
//! Only bf16 is offered for training: f16 keeps more mantissa bits but has a narrow exponent,
//! so small gradients underflow without loss scaling, which the trainer does not do.
//! bf16 pays off on GPUs with bf16 matrix units (CUDA); CPU backends convert it to f32 inside
//! the product and only get slower, and WGSL has no bf16 type.

use crate::backend::Backend;
use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The number format of the blocks' matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in the backend's float type (f32).
    #[default]
    F32,
    /// Matrix products on bfloat16 inputs; all else f32.
    Bf16,
}

impl Precision {
    /// Parses a command-line name: `f32` or `bf16`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Err(format!(
                "unsupported precision '{name}': f16 training needs loss scaling, which mimic \
                 does not do; use bf16 (or f32)"
            )),
            other => Err(format!("unknown precision '{other}' (f32 or bf16)")),
        }
    }

    /// The name [`Self::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    fn half(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }

    /// `t` rounded to this precision's matrix-product input type (unchanged for f32).
    pub fn round<B: Backend, const D: usize>(self, t: Tensor<B, D>) -> Tensor<B, D> {
        match self.half() {
            None => t,
            Some(half) => t.cast(half),
        }
    }

    /// `a.matmul(b)` with the inputs rounded to this precision; the result has `a`'s float
    /// type.
    pub fn matmul<B: Backend, const D: usize>(
        self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        match self.half() {
            None => a.matmul(b),
            Some(half) => {
                let out: FloatDType = a.dtype().into();
                a.cast(half).matmul(b.cast(half)).cast(out)
            }
        }
    }

    /// A linear layer on rows, `x · W + b`, with the product in this precision and the bias
    /// added in the weight's float type (f32). `rows` may come already rounded
    /// ([`Self::round`]), so that one input feeds several products with one cast.
    ///
    /// # Shapes
    /// - rows: `[n, d_in]`, weight `[d_in, d_out]`, bias `[d_out]` -> `[n, d_out]`
    pub fn linear<B: Backend>(
        self,
        rows: Tensor<B, 2>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 2> {
        match self.half() {
            None => linear(rows, weight, bias),
            Some(half) => {
                let out: FloatDType = weight.dtype().into();
                let product = linear(rows.cast(half), weight.cast(half), None).cast(out);
                match bias {
                    Some(b) => product + b.unsqueeze(),
                    None => product,
                }
            }
        }
    }

    /// [`Self::linear`] with a layer's parameters.
    pub fn apply<B: Backend>(self, layer: &Linear<B>, rows: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear(
            rows,
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_f16_is_refused_with_a_reason() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(Precision::parse(p.name()), Ok(p));
        }
        assert!(Precision::parse("f16")
            .unwrap_err()
            .contains("loss scaling"));
        assert!(Precision::parse("int8")
            .unwrap_err()
            .contains("f32 or bf16"));
    }
}
