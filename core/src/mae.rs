//! Masked-autoencoder pre-training of the ViT encoder (He et al., "Masked Autoencoders Are
//! Scalable Vision Learners", CVPR 2022, <https://arxiv.org/abs/2111.06377>), with the
//! parameter names of facebookresearch/mae's `MaskedAutoencoderViT` so that its `*_full.pth`
//! files load 1:1.
//!
//! The step: patch tokens get their (fixed sin-cos) positions, then a random 25 % of them per
//! image is kept — the shuffle comes from the host RNG as indices, never from a device
//! argsort — and only those go through the encoder (with the cls token prepended). A light
//! decoder embeds the latent tokens, appends mask tokens, restores the patch order, adds its own
//! sin-cos positions and predicts the `patch · patch · 3` pixel values of every patch. The loss
//! is the per-patch MSE against the (optionally per-patch normalised) pixels, averaged over the
//! masked patches only.

use crate::backend::Backend;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use rand::Rng;

use crate::model::{pos_embed, xavier_linear, Block, BlockConfig, Pool, Vit, VitConfig, LN_EPS};
use crate::weights::{
    join, load_into, Layout, LoadPolicy, LoadReport, ParamVisitor, TensorMap, VisitParams,
};
use crate::Error;

/// Configuration of a [`Mae`]: the encoder plus the decoder and the masking.
#[derive(Config, Debug)]
pub struct MaeConfig {
    /// The encoder. Built with cls pooling (its final `norm`), no head and a fixed position
    /// table, as MAE pre-trains it; [`MaeConfig::encoder`] returns that form.
    pub encoder: VitConfig,
    /// Decoder token width.
    pub decoder_dim: usize,
    /// Decoder blocks.
    pub decoder_depth: usize,
    /// Decoder attention heads.
    pub decoder_heads: usize,
    /// Share of patches removed per image. Default: 0.75 (MAE).
    #[config(default = 0.75)]
    pub mask_ratio: f64,
    /// Normalise each target patch by its mean and unbiased variance. Default: true (MAE's
    /// recommended setting).
    #[config(default = true)]
    pub norm_pix_loss: bool,
}

impl MaeConfig {
    /// The MAE set-up for an encoder preset. The 224-px presets get MAE's decoder (width 512,
    /// 8 blocks, 16 heads); the small CPU and test presets get decoders scaled to their size.
    pub fn for_preset(name: &str) -> crate::Result<Self> {
        let encoder = VitConfig::preset(name)?;
        let (dim, depth, heads) = match name {
            "vit_cpu_patch6_48" => (128, 2, 4),
            "vit_toy_patch8_32" => (32, 1, 2),
            _ => (512, 8, 16),
        };
        Ok(MaeConfig::new(encoder, dim, depth, heads))
    }

    /// The encoder configuration as pre-trained: cls pooling (final `norm`), no head, no
    /// stochastic depth, fixed sin-cos positions.
    pub fn encoder(&self) -> VitConfig {
        self.encoder
            .clone()
            .with_pool(Pool::Cls)
            .with_n_classes(0)
            .with_drop_path(0.0)
            .with_fixed_pos_embed(true)
    }

    /// Patches kept per image: `int(n_patches · (1 − mask_ratio))`, as MAE computes it.
    pub fn len_keep(&self) -> usize {
        (self.encoder.n_patches() as f64 * (1.0 - self.mask_ratio)) as usize
    }

    /// Checks the sizes and the ratio.
    pub fn validate(&self) -> crate::Result<()> {
        self.encoder().validate()?;
        let fail = |m: String| Err(Error::Config(m));
        if !(self.mask_ratio >= 0.0 && self.mask_ratio < 1.0) {
            return fail(format!("mask ratio {} must be in [0, 1)", self.mask_ratio));
        }
        if self.len_keep() == 0 {
            return fail(format!(
                "mask ratio {} keeps no patch of {}",
                self.mask_ratio,
                self.encoder.n_patches()
            ));
        }
        if self.decoder_depth == 0
            || self.decoder_dim == 0
            || self.decoder_heads == 0
            || !self.decoder_dim.is_multiple_of(self.decoder_heads)
            || !self.decoder_dim.is_multiple_of(4)
        {
            return fail(format!(
                "decoder width {} must be a multiple of 4 and of its {} heads, depth {} at least 1",
                self.decoder_dim, self.decoder_heads, self.decoder_depth
            ));
        }
        Ok(())
    }

    /// Builds the model with MAE's initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<Mae<B>> {
        self.validate()?;
        let encoder = self.encoder().init::<B>(device)?;
        let dd = self.decoder_dim;
        let n_patches = self.encoder.n_patches();
        let table = pos_embed::sincos_2d(dd, self.encoder.grid_size(), true);
        let decoder_pos = Tensor::from_data(TensorData::new(table, [1, 1 + n_patches, dd]), device);
        let decoder_blocks = (0..self.decoder_depth)
            .map(|_| {
                let hidden = (dd as f64 * self.encoder.mlp_ratio) as usize;
                BlockConfig::new(dd, self.decoder_heads, hidden).init(device)
            })
            .collect();
        let p = self.encoder.patch_size;
        let model = Mae {
            encoder,
            decoder_embed: xavier_linear(self.encoder.d_model, dd, device),
            mask_token: Param::from_tensor(Tensor::random(
                [1, 1, dd],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            decoder_pos_embed: Param::from_tensor(decoder_pos).set_require_grad(false),
            decoder_blocks,
            decoder_norm: LayerNormConfig::new(dd).with_epsilon(LN_EPS).init(device),
            decoder_pred: xavier_linear(dd, p * p * self.encoder.in_chans, device),
            config: self.clone(),
        };
        crate::model::materialize(&model);
        Ok(model)
    }
}

/// Which patches each image keeps: a host-side permutation per image and its inverse, as MAE's
/// `random_masking` derives them from per-patch noise (ascending noise is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Masking {
    /// Images.
    pub batch: usize,
    /// Patches per image.
    pub n_patches: usize,
    /// Patches kept per image.
    pub len_keep: usize,
    /// `[batch, len_keep]` kept patch indices, in shuffled order (MAE's `ids_keep`).
    pub ids_keep: Vec<usize>,
    /// `[batch, n_patches]` position of each patch in the shuffled order (MAE's `ids_restore`).
    pub ids_restore: Vec<usize>,
    /// `[batch, n_patches]`: 0 for kept patches, 1 for removed ones, in patch order.
    pub mask: Vec<f32>,
}

impl Masking {
    /// The masking MAE computes from `noise` (`[batch, n_patches]`, row-major): each row is
    /// sorted ascending and the first `len_keep` patches are kept.
    ///
    /// # Panics
    /// If `noise` has not `batch · n_patches` values or `len_keep > n_patches`.
    pub fn from_noise(noise: &[f32], batch: usize, n_patches: usize, len_keep: usize) -> Self {
        assert_eq!(
            noise.len(),
            batch * n_patches,
            "noise must be [batch, n_patches]"
        );
        assert!(len_keep <= n_patches, "cannot keep more patches than exist");
        let mut ids_keep = Vec::with_capacity(batch * len_keep);
        let mut ids_restore = vec![0; batch * n_patches];
        let mut mask = vec![1.0; batch * n_patches];
        for b in 0..batch {
            let row = &noise[b * n_patches..][..n_patches];
            let mut shuffle: Vec<usize> = (0..n_patches).collect();
            shuffle.sort_by(|&i, &j| row[i].total_cmp(&row[j]));
            for (rank, &patch) in shuffle.iter().enumerate() {
                ids_restore[b * n_patches + patch] = rank;
                if rank < len_keep {
                    mask[b * n_patches + patch] = 0.0;
                }
            }
            ids_keep.extend_from_slice(&shuffle[..len_keep]);
        }
        Self {
            batch,
            n_patches,
            len_keep,
            ids_keep,
            ids_restore,
            mask,
        }
    }

    /// The masking of images `start..start + len` of the batch.
    ///
    /// # Panics
    /// If the range is not inside the batch.
    pub fn rows(&self, start: usize, len: usize) -> Self {
        assert!(start + len <= self.batch, "rows outside the batch");
        let (p, k) = (self.n_patches, self.len_keep);
        Self {
            batch: len,
            n_patches: p,
            len_keep: k,
            ids_keep: self.ids_keep[start * k..(start + len) * k].to_vec(),
            ids_restore: self.ids_restore[start * p..(start + len) * p].to_vec(),
            mask: self.mask[start * p..(start + len) * p].to_vec(),
        }
    }

    /// A fresh random masking: uniform noise per patch from `rng`, then [`Self::from_noise`].
    pub fn random(rng: &mut impl Rng, batch: usize, n_patches: usize, len_keep: usize) -> Self {
        let noise: Vec<f32> = (0..batch * n_patches).map(|_| rng.random()).collect();
        Self::from_noise(&noise, batch, n_patches, len_keep)
    }

    /// Flat row indices `b · n_patches + ids_keep[b, k]` for selecting kept tokens.
    fn keep_rows(&self) -> Vec<i64> {
        (0..self.batch)
            .flat_map(|b| {
                self.ids_keep[b * self.len_keep..][..self.len_keep]
                    .iter()
                    .map(move |&i| (b * self.n_patches + i) as i64)
            })
            .collect()
    }

    /// Flat row indices `b · n_patches + ids_restore[b, i]` for unshuffling decoder tokens.
    fn restore_rows(&self) -> Vec<i64> {
        (0..self.batch)
            .flat_map(|b| {
                self.ids_restore[b * self.n_patches..][..self.n_patches]
                    .iter()
                    .map(move |&i| (b * self.n_patches + i) as i64)
            })
            .collect()
    }
}

/// Rows `indices` of `x` viewed as `[batch · n, d]`, reshaped to `[batch, n_out, d]`.
fn gather_rows<B: Backend>(x: Tensor<B, 3>, rows: Vec<i64>, n_out: usize) -> Tensor<B, 3> {
    let [batch, n, d] = x.dims();
    let device = x.device();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [batch * n_out]), &device);
    x.reshape([batch * n, d])
        .select(0, index)
        .reshape([batch, n_out, d])
}

/// Cuts images into patch vectors, MAE's `patchify`: patches row-major, each vector ordered
/// (row, column, channel) with the channel fastest — unlike the patch-embedding conv weight.
///
/// # Shapes
/// - images: `[batch, chans, h · p, w · p]` -> `[batch, h · w, p · p · chans]`
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [batch, chans, height, width] = images.dims();
    let (h, w) = (height / patch, width / patch);
    images
        .reshape([batch, chans, h, patch, w, patch])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([batch, h * w, patch * patch * chans])
}

/// The inverse of [`patchify`] for square images, MAE's `unpatchify`.
///
/// # Shapes
/// - patches: `[batch, g · g, p · p · chans]` -> `[batch, chans, g · p, g · p]`
pub fn unpatchify<B: Backend>(patches: Tensor<B, 3>, patch: usize, chans: usize) -> Tensor<B, 4> {
    let [batch, n, _] = patches.dims();
    let g = (n as f64).sqrt().round() as usize;
    assert_eq!(
        g * g,
        n,
        "unpatchify needs a square patch grid, got {n} patches"
    );
    patches
        .reshape([batch, g, g, patch, patch, chans])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([batch, chans, g * patch, g * patch])
}

/// The masked autoencoder: the ViT encoder plus MAE's decoder, laid out as facebookresearch/
/// mae's `MaskedAutoencoderViT` (`mask_token`, `decoder_embed`, `decoder_pos_embed`,
/// `decoder_blocks`, `decoder_norm`, `decoder_pred`).
#[derive(Module, Debug)]
pub struct Mae<B: Backend> {
    /// The encoder (cls pooling: its `norm` closes the encoder, as in MAE).
    pub encoder: Vit<B>,
    /// Encoder width to decoder width.
    pub decoder_embed: Linear<B>,
    /// The learned token standing in for each removed patch `[1, 1, decoder_dim]`.
    pub mask_token: Param<Tensor<B, 3>>,
    /// Fixed sin-cos positions of the decoder `[1, 1 + n_patches, decoder_dim]`.
    pub decoder_pos_embed: Param<Tensor<B, 3>>,
    /// Decoder blocks.
    pub decoder_blocks: Vec<Block<B>>,
    /// Final decoder norm.
    pub decoder_norm: LayerNorm<B>,
    /// Decoder width to `patch · patch · chans` pixel values.
    pub decoder_pred: Linear<B>,
    #[module(skip)]
    config: MaeConfig,
}

/// What one forward pass gives.
#[derive(Debug, Clone)]
pub struct MaeOutput<B: Backend> {
    /// Mean per-patch loss over the removed patches (a scalar tensor).
    pub loss: Tensor<B, 1>,
    /// Predicted patch values `[batch, n_patches, p · p · chans]`, in the (normalised) target
    /// space of the loss.
    pub pred: Tensor<B, 3>,
}

impl<B: Backend> Mae<B> {
    /// The model with the matrix products of its encoder and decoder blocks in `precision`.
    pub fn with_precision(mut self, precision: crate::model::Precision) -> Self {
        self.encoder = self.encoder.with_precision(precision);
        for block in &mut self.decoder_blocks {
            block.set_precision(precision);
        }
        self
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &MaeConfig {
        &self.config
    }

    /// Encodes the kept patches: patch tokens plus their positions, the kept subset, the cls
    /// token (with its position) in front, the blocks and the final norm.
    ///
    /// # Shapes
    /// - images: `[batch, chans, img, img]` -> `[batch, 1 + len_keep, d_model]`
    pub fn forward_encoder(&self, images: Tensor<B, 4>, masking: &Masking) -> Tensor<B, 3> {
        let vit = &self.encoder;
        let x = vit.patch_embed.forward(images); // [batch, n_patches, d]
        let [batch, n_patches, d] = x.dims();
        assert_eq!(
            (batch, n_patches),
            (masking.batch, masking.n_patches),
            "the masking was drawn for another batch or patch grid"
        );
        let pos = vit.pos_embed.val();
        let x = x + pos.clone().narrow(1, 1, n_patches);
        let x = gather_rows(x, masking.keep_rows(), masking.len_keep);
        let cls = (vit.cls_token.val() + pos.narrow(1, 0, 1)).expand([batch, 1, d]);
        let mut x = Tensor::cat(vec![cls, x], 1);
        for block in &vit.blocks {
            x = block.forward(x);
        }
        vit.norm
            .as_ref()
            .expect("the MAE encoder is built with its final norm")
            .forward(x)
    }

    /// Decodes the latent tokens into pixel predictions for every patch (cls dropped).
    ///
    /// # Shapes
    /// - latent: `[batch, 1 + len_keep, d_model]` -> `[batch, n_patches, p · p · chans]`
    pub fn forward_decoder(&self, latent: Tensor<B, 3>, masking: &Masking) -> Tensor<B, 3> {
        let x = self.decoder_embed.forward(latent);
        let [batch, n_tokens, dd] = x.dims();
        let n_patches = masking.n_patches;
        let n_masked = n_patches + 1 - n_tokens;
        let cls = x.clone().narrow(1, 0, 1);
        let tokens = x.narrow(1, 1, n_tokens - 1);
        let shuffled = match n_masked {
            0 => tokens, // mask ratio 0: every patch was kept
            _ => {
                let masked = self.mask_token.val().expand([batch, n_masked, dd]);
                Tensor::cat(vec![tokens, masked], 1) // [batch, n_patches, dd]
            }
        };
        let ordered = gather_rows(shuffled, masking.restore_rows(), n_patches);
        let mut x = Tensor::cat(vec![cls, ordered], 1) + self.decoder_pos_embed.val();
        for block in &self.decoder_blocks {
            x = block.forward(x);
        }
        let x = self.decoder_pred.forward(self.decoder_norm.forward(x));
        x.narrow(1, 1, n_patches)
    }

    /// The per-patch targets of the loss: the patchified pixels, normalised per patch by its
    /// mean and unbiased variance (+ 1e-6) when `norm_pix_loss` is set.
    ///
    /// # Shapes
    /// - images: `[batch, chans, img, img]` -> `[batch, n_patches, p · p · chans]`
    pub fn targets(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let target = patchify(images, self.config.encoder.patch_size);
        if !self.config.norm_pix_loss {
            return target;
        }
        let (var, mean) = target.clone().var_mean(2);
        (target - mean) / (var + 1e-6).sqrt()
    }

    /// Mean squared error per patch, averaged over the removed patches only.
    ///
    /// # Shapes
    /// - images: `[batch, chans, img, img]`, pred: `[batch, n_patches, p · p · chans]`
    pub fn loss(
        &self,
        images: Tensor<B, 4>,
        pred: Tensor<B, 3>,
        masking: &Masking,
    ) -> Tensor<B, 1> {
        let target = self.targets(images);
        let [batch, n_patches, _] = pred.dims();
        let per_patch = (pred - target)
            .powi_scalar(2)
            .mean_dim(2)
            .reshape([batch, n_patches]);
        let mask = Tensor::<B, 2>::from_data(
            TensorData::new(masking.mask.clone(), [batch, n_patches]),
            &per_patch.device(),
        );
        let removed: f32 = masking.mask.iter().sum();
        (per_patch * mask).sum().div_scalar(removed.max(1.0))
    }

    /// The full step's forward pass: encoder on the kept patches, decoder, loss.
    pub fn forward(&self, images: Tensor<B, 4>, masking: &Masking) -> MaeOutput<B> {
        let latent = self.forward_encoder(images.clone(), masking);
        let pred = self.forward_decoder(latent, masking);
        let loss = self.loss(images, pred.clone(), masking);
        MaeOutput { loss, pred }
    }

    /// Predictions mapped back to (normalised) image space for viewing: with `norm_pix_loss`
    /// each predicted patch gets the mean and spread of the true patch back, then the patches
    /// are laid out as an image.
    ///
    /// # Shapes
    /// - images: `[batch, chans, img, img]`, pred: `[batch, n_patches, p · p · chans]`
    /// - output: `[batch, chans, img, img]`
    pub fn reconstruction(&self, images: Tensor<B, 4>, pred: Tensor<B, 3>) -> Tensor<B, 4> {
        let p = self.config.encoder.patch_size;
        let pred = if self.config.norm_pix_loss {
            let (var, mean) = patchify(images, p).var_mean(2);
            pred * (var + 1e-6).sqrt() + mean
        } else {
            pred
        };
        unpatchify(pred, p, self.config.encoder.in_chans)
    }

    /// A masking for `batch` images drawn from `rng` with the configured ratio.
    pub fn random_masking(&self, rng: &mut impl Rng, batch: usize) -> Masking {
        Masking::random(
            rng,
            batch,
            self.config.encoder.n_patches(),
            self.config.len_keep(),
        )
    }
}

impl<B: Backend> VisitParams<B> for Mae<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.encoder.visit_params(prefix, v);
        self.decoder_embed
            .visit_params(&join(prefix, "decoder_embed"), v);
        v.visit(
            &join(prefix, "mask_token"),
            Layout::Same,
            &mut self.mask_token,
        );
        v.visit(
            &join(prefix, "decoder_pos_embed"),
            Layout::Same,
            &mut self.decoder_pos_embed,
        );
        self.decoder_blocks
            .visit_params(&join(prefix, "decoder_blocks"), v);
        self.decoder_norm
            .visit_params(&join(prefix, "decoder_norm"), v);
        self.decoder_pred
            .visit_params(&join(prefix, "decoder_pred"), v);
    }
}

/// Metadata key under which mimic's MAE checkpoints store the [`MaeConfig`] (JSON).
pub const MAE_CONFIG_KEY: &str = "mimic.mae";

/// Whether a weight file holds an MAE decoder (any `decoder_*` tensor or the mask token).
pub fn has_decoder(map: &TensorMap) -> bool {
    map.tensors
        .keys()
        .any(|k| k.starts_with("decoder_") || k == "mask_token")
}

/// Builds a [`Mae`] for `config` and loads a full checkpoint (encoder and decoder: ours, or an
/// official `mae_pretrain_*_full.pth`) into it, strictly: every tensor must be present and of
/// the right shape. An encoder-only file is refused with a message saying so.
pub fn load_mae<B: Backend>(
    config: &MaeConfig,
    map: TensorMap,
    device: &B::Device,
) -> crate::Result<(Mae<B>, LoadReport)> {
    if !has_decoder(&map) {
        return Err(Error::WeightMismatch {
            source_name: map.source.clone(),
            details: "the file holds an encoder only (no decoder_* tensors, no mask_token): \
                      continuing pre-training needs a full checkpoint with the decoder (our \
                      full.safetensors or an official *_full.pth); an encoder-only file can \
                      initialise fine-tuning (finetune --init)"
                .into(),
        });
    }
    let mut model = config.init::<B>(device)?;
    let report = load_into(&mut model, map, &LoadPolicy::strict(), device)?;
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    type B = Flex;

    #[test]
    fn masking_keeps_exactly_len_keep_and_restores_the_order() {
        let mut rng = StdRng::seed_from_u64(3);
        let (batch, n) = (5, 64);
        let keep = (n as f64 * (1.0 - 0.75)) as usize;
        let m = Masking::random(&mut rng, batch, n, keep);
        assert_eq!(keep, 16);
        for b in 0..batch {
            let kept = &m.ids_keep[b * keep..][..keep];
            let mask = &m.mask[b * n..][..n];
            assert_eq!(mask.iter().filter(|&&v| v == 0.0).count(), keep);
            for (i, &v) in mask.iter().enumerate() {
                assert_eq!(
                    v == 0.0,
                    kept.contains(&i),
                    "mask marks exactly the removed"
                );
            }
            let mut sorted = kept.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), keep, "kept patches are distinct");
        }
        // Different images get different subsets.
        assert_ne!(m.ids_keep[..keep], m.ids_keep[keep..2 * keep]);

        // Unshuffling the shuffled tokens (kept first, then the removed) restores the order.
        let device = Default::default();
        let tokens: Vec<f32> = (0..batch * n).map(|i| (i % n) as f32).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(tokens, [batch, n, 1]), &device);
        let mut shuffled_rows = Vec::new();
        for b in 0..batch {
            let row = &m.ids_restore[b * n..][..n];
            let mut shuffle = vec![0; n];
            for (patch, &rank) in row.iter().enumerate() {
                shuffle[rank] = patch;
            }
            assert_eq!(&shuffle[..keep], &m.ids_keep[b * keep..][..keep]);
            shuffled_rows.extend(shuffle.iter().map(|&p| (b * n + p) as i64));
        }
        let shuffled = gather_rows(x.clone(), shuffled_rows, n);
        let restored = gather_rows(shuffled, m.restore_rows(), n);
        restored.into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn patchify_orders_channels_last_and_unpatchify_inverts_it() {
        let device = Default::default();
        let (p, size) = (4, 8);
        let values: Vec<f32> = (0..2 * 3 * size * size).map(|v| v as f32).collect();
        let images =
            Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [2, 3, size, size]), &device);
        let patches = patchify(images.clone(), p);
        assert_eq!(patches.dims(), [2, 4, p * p * 3]);
        // Patch 1 of image 0 is rows 0..4, columns 4..8; its vector starts with the three
        // channels of pixel (0, 4).
        let v = patches.clone().into_data().to_vec::<f32>().unwrap();
        let px = |c: usize, y: usize, x: usize| values[(c * size + y) * size + x];
        let first = &v[p * p * 3..][..6];
        assert_eq!(
            first,
            &[
                px(0, 0, 4),
                px(1, 0, 4),
                px(2, 0, 4),
                px(0, 0, 5),
                px(1, 0, 5),
                px(2, 0, 5)
            ]
        );
        unpatchify(patches, p, 3)
            .into_data()
            .assert_eq(&images.into_data(), true);
    }

    #[test]
    fn shapes_and_parameter_names_follow_mae() {
        let device = Default::default();
        let config = MaeConfig::for_preset("vit_toy_patch8_32").unwrap();
        let mut mae: Mae<B> = config.init(&device).unwrap();
        let images = Tensor::<B, 4>::random([3, 3, 32, 32], Distribution::Default, &device);
        let masking = mae.random_masking(&mut StdRng::seed_from_u64(1), 3);
        assert_eq!(masking.len_keep, 4);
        let latent = mae.forward_encoder(images.clone(), &masking);
        assert_eq!(latent.dims(), [3, 5, 64]);
        let out = mae.forward(images, &masking);
        assert_eq!(out.pred.dims(), [3, 16, 8 * 8 * 3]);
        let loss: f32 = out.loss.into_scalar();
        assert!(loss.is_finite() && loss > 0.0);

        let names: Vec<String> = crate::weights::param_shapes(&mut mae)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for want in [
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "blocks.1.mlp.fc2.bias",
            "norm.weight",
            "decoder_embed.weight",
            "mask_token",
            "decoder_pos_embed",
            "decoder_blocks.0.attn.qkv.weight",
            "decoder_norm.bias",
            "decoder_pred.weight",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert!(!names
            .iter()
            .any(|n| n.starts_with("fc_norm") || n.starts_with("head")));
    }

    #[test]
    fn mask_ratio_zero_keeps_every_patch() {
        let device = Default::default();
        let config = MaeConfig::for_preset("vit_toy_patch8_32")
            .unwrap()
            .with_mask_ratio(0.0);
        let mae: Mae<B> = config.init(&device).unwrap();
        let images = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
        let masking = mae.random_masking(&mut StdRng::seed_from_u64(2), 2);
        assert_eq!(masking.len_keep, 16);
        let out = mae.forward(images, &masking);
        assert_eq!(out.pred.dims(), [2, 16, 192]);
        // Nothing is removed, so the loss over removed patches is 0.
        assert_eq!(out.loss.into_scalar(), 0.0);
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = MaeConfig::for_preset("vit_toy_patch8_32").unwrap();
        assert!(base.clone().with_mask_ratio(1.0).validate().is_err());
        assert!(base.clone().with_mask_ratio(0.99).validate().is_err()); // keeps 0 of 16
        assert!(MaeConfig {
            decoder_dim: 0,
            ..base.clone()
        }
        .validate()
        .is_err());
        assert!(MaeConfig {
            decoder_heads: 3,
            ..base.clone()
        }
        .validate()
        .is_err());
        assert!(base.validate().is_ok());
    }
}
