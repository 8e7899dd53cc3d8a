use crate::backend::Backend;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Distribution, Tensor, TensorData};

use super::attention::xavier_linear;
use super::{
    pos_embed, Block, BlockConfig, PatchEmbed, PatchEmbedConfig, Pool, Precision, VitConfig, LN_EPS,
};

/// The Vision Transformer encoder with an optional linear head (Dosovitskiy et al., ICLR
/// 2021, <https://arxiv.org/abs/2010.11929>), laid out as timm's `VisionTransformer` so that
/// timm and MAE checkpoints map 1:1 onto its fields.
///
/// As in timm, GAP pooling uses `fc_norm` and has no final `norm`; cls pooling uses `norm` and
/// has no `fc_norm`.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    /// Patchify + linear projection.
    pub patch_embed: PatchEmbed<B>,
    /// Learnable cls token `[1, 1, d_model]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Position embedding `[1, 1 + n_patches, d_model]`; row 0 belongs to the cls token.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final norm over all tokens (cls pooling only).
    pub norm: Option<LayerNorm<B>>,
    /// Norm after average pooling (GAP only).
    pub fc_norm: Option<LayerNorm<B>>,
    /// Classification head (absent when `n_classes` is 0).
    pub head: Option<Linear<B>>,
    #[module(skip)]
    config: VitConfig,
}

impl<B: Backend> Vit<B> {
    /// Builds the model; called by [`VitConfig::init`] after validation.
    pub(super) fn new(config: &VitConfig, device: &B::Device) -> Self {
        let d = config.d_model;
        let ln = || LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device);

        // Stochastic depth rises linearly from 0 to drop_path over the blocks (timm).
        let blocks = (0..config.depth)
            .map(|i| {
                let rate = if config.depth > 1 {
                    config.drop_path * i as f64 / (config.depth - 1) as f64
                } else {
                    config.drop_path
                };
                BlockConfig::new(d, config.n_heads, config.d_hidden())
                    .with_drop_path(rate)
                    .init(device)
            })
            .collect();

        let table = pos_embed::sincos_2d(d, config.grid_size(), true);
        let pos = Tensor::from_data(
            TensorData::new(table, [1, 1 + config.n_patches(), d]),
            device,
        );
        let mut pos_embed = Param::from_tensor(pos);
        if config.fixed_pos_embed {
            pos_embed = pos_embed.set_require_grad(false);
        }
        let cls = Tensor::random([1, 1, d], Distribution::Normal(0.0, 0.02), device);

        Vit {
            patch_embed: PatchEmbedConfig::new(config.patch_size, config.in_chans, d).init(device),
            cls_token: Param::from_tensor(cls),
            pos_embed,
            blocks,
            norm: (config.pool == Pool::Cls).then(ln),
            fc_norm: (config.pool == Pool::Gap).then(ln),
            head: (config.n_classes > 0).then(|| xavier_linear(d, config.n_classes, device)),
            config: config.clone(),
        }
    }

    /// The model with its blocks' matrix products in `precision` ([`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        for block in &mut self.blocks {
            block.set_precision(precision);
        }
        self
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Runs the encoder on images and returns all tokens after the last block (before any
    /// final norm).
    ///
    /// # Shapes
    /// - images: `[batch, in_chans, img_size, img_size]`, normalised
    /// - output: `[batch, 1 + n_patches, d_model]`, cls token first
    pub fn forward_tokens(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [_, _, height, width] = images.dims();
        let size = self.config.img_size;
        assert!(
            height == size && width == size,
            "the model expects {size}x{size} images, got {height}x{width}"
        );

        let x = self.patch_embed.forward(images); // [batch, n_patches, d_model]
        let [batch, _, d_model] = x.dims();
        let cls = self.cls_token.val().expand([batch, 1, d_model]);

        let x = Tensor::cat(vec![cls, x], 1); // [batch, 1 + n_patches, d_model]
        let mut x = x + self.pos_embed.val();

        for block in &self.blocks {
            x = block.forward(x);
        }
        x
    }

    /// Pools encoder tokens into one feature per image: GAP over the patch tokens (cls
    /// excluded) then `fc_norm`, or `norm` then the cls token.
    ///
    /// # Shapes
    /// - tokens: `[batch, 1 + n_patches, d_model]`
    /// - output: `[batch, d_model]`
    pub fn pool(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, n_tokens, d_model] = tokens.dims();
        match self.config.pool {
            Pool::Gap => {
                let mean = tokens
                    .narrow(1, 1, n_tokens - 1)
                    .mean_dim(1)
                    .reshape([batch, d_model]);
                self.fc_norm
                    .as_ref()
                    .expect("GAP models have fc_norm")
                    .forward(mean)
            }
            Pool::Cls => {
                let tokens = self
                    .norm
                    .as_ref()
                    .expect("cls models have norm")
                    .forward(tokens);
                tokens.narrow(1, 0, 1).reshape([batch, d_model])
            }
        }
    }

    /// The pooled feature `r` of each image (timm's pre-logits).
    ///
    /// # Shapes
    /// - images: `[batch, in_chans, img_size, img_size]` -> `[batch, d_model]`
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.pool(self.forward_tokens(images))
    }

    /// Class logits from pooled features.
    ///
    /// # Panics
    /// If the model was built without a head (`n_classes` = 0).
    ///
    /// # Shapes
    /// - features: `[batch, d_model]` -> `[batch, n_classes]`
    pub fn forward_head(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let head = self
            .head
            .as_ref()
            .expect("forward_head needs a model with n_classes > 0");
        head.forward(features)
    }

    /// Class logits of images.
    ///
    /// # Shapes
    /// - images: `[batch, in_chans, img_size, img_size]` -> `[batch, n_classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_head(self.forward_features(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;

    type B = Flex;
    type AD = Autodiff<Flex>;

    fn toy(pool: Pool) -> VitConfig {
        VitConfig::preset("vit_toy_patch8_32")
            .unwrap()
            .with_n_classes(5)
            .with_pool(pool)
    }

    #[test]
    fn shapes_and_heads_follow_pooling() {
        let device = Default::default();
        let gap: Vit<B> = toy(Pool::Gap).init(&device).unwrap();
        assert!(gap.fc_norm.is_some() && gap.norm.is_none());
        let cls: Vit<B> = toy(Pool::Cls).init(&device).unwrap();
        assert!(cls.fc_norm.is_none() && cls.norm.is_some());
        let x = Tensor::<B, 4>::random([3, 3, 32, 32], Distribution::Default, &device);
        assert_eq!(gap.forward_tokens(x.clone()).dims(), [3, 17, 64]);
        assert_eq!(gap.forward(x.clone()).dims(), [3, 5]);
        assert_eq!(cls.forward(x).dims(), [3, 5]);
    }

    #[test]
    fn gap_excludes_the_cls_token() {
        let device = Default::default();
        let model: Vit<B> = toy(Pool::Gap).init(&device).unwrap();
        let x = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
        let tokens = model.forward_tokens(x);
        let pooled = model.pool(tokens.clone());

        // Changing only the cls token must leave the GAP feature unchanged.
        let mut shifted = tokens.clone();
        shifted = shifted.slice_assign(
            [0..2, 0..1, 0..64],
            Tensor::ones([2, 1, 64], &device).mul_scalar(100.0),
        );
        let pooled_shifted = model.pool(shifted);
        pooled
            .into_data()
            .assert_approx_eq::<f32>(&pooled_shifted.into_data(), Default::default());
    }

    #[test]
    fn drop_path_is_identity_in_eval_mode() {
        let device = Default::default();
        let config = toy(Pool::Gap).with_drop_path(0.5);
        let model: Vit<AD> = config.init(&device).unwrap();
        let x = Tensor::<B, 4>::random([4, 3, 32, 32], Distribution::Default, &device);
        let eval = model.valid();
        let a = eval.forward(x.clone()).into_data();
        let b = eval.forward(x.clone()).into_data();
        a.assert_eq(&b, true);

        // The same weights without stochastic depth give the same logits in eval mode.
        let plain = toy(Pool::Gap).init::<B>(&device).unwrap();
        let plain = plain.load_record(eval.clone().into_record());
        plain
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&a, Default::default());
    }

    #[test]
    fn drop_path_drops_whole_samples_in_training() {
        let device = Default::default();
        let dp = DropPathProbe::new(0.5);
        let x = Tensor::<AD, 3>::ones([64, 4, 8], &device);
        let y = dp.0.forward(x).into_data().to_vec::<f32>().unwrap();
        for sample in y.chunks(32) {
            let first = sample[0];
            assert!(
                first == 0.0 || (first - 2.0).abs() < 1e-6,
                "kept samples scale by 1/keep"
            );
            assert!(sample.iter().all(|&v| v == first), "the mask is per sample");
        }
        let dropped = y.chunks(32).filter(|s| s[0] == 0.0).count();
        assert!(
            (10..=54).contains(&dropped),
            "{dropped} of 64 dropped at p = 0.5"
        );
    }

    struct DropPathProbe(super::super::DropPath);
    impl DropPathProbe {
        fn new(prob: f64) -> Self {
            Self(super::super::DropPath { prob })
        }
    }
}
