use crate::backend::Backend;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor};

/// Configuration of [`PatchEmbed`].
#[derive(Config, Debug)]
pub struct PatchEmbedConfig {
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// Token width.
    pub d_model: usize,
}

/// Splits an image into non-overlapping patches and projects each to a token: timm's
/// `patch_embed.proj`, a conv with kernel = stride = patch, computed as one matmul on the
/// patchified pixels. The weight keeps the conv layout `[d_model, in_chans, patch, patch]`
/// so checkpoints load unchanged.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// Conv weight `[d_model, in_chans, patch, patch]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Conv bias `[d_model]`.
    pub bias: Param<Tensor<B, 1>>,
    patch_size: usize,
}

impl PatchEmbedConfig {
    /// Xavier-uniform weights over the flattened kernel (MAE's init), zero bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PatchEmbed<B> {
        let fan_in = self.in_chans * self.patch_size * self.patch_size;
        let bound = (6.0 / (fan_in + self.d_model) as f64).sqrt();
        let shape = [
            self.d_model,
            self.in_chans,
            self.patch_size,
            self.patch_size,
        ];
        let weight = Tensor::random(shape, Distribution::Uniform(-bound, bound), device);
        PatchEmbed {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(Tensor::zeros([self.d_model], device)),
            patch_size: self.patch_size,
        }
    }
}

impl<B: Backend> PatchEmbed<B> {
    /// # Shapes
    /// - images: `[batch, in_chans, height, width]`, sides divisible by the patch size
    /// - output: `[batch, n_patches, d_model]`, patches row-major
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, chans, height, width] = images.dims();
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        assert!(
            gh * p == height && gw * p == width,
            "image {height}x{width} is not a multiple of the patch size {p}"
        );

        // Pixels of each patch in the conv weight's order (channel, row, column), one patch
        // per row: a single 2-D matmul is faster on CPU backends than one per image.
        let patches = images
            .reshape([batch, chans, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch * gh * gw, chans * p * p]);

        let [d_model, ..] = self.weight.dims();
        let weight = self
            .weight
            .val()
            .reshape([d_model, chans * p * p])
            .transpose();
        let tokens = patches.matmul(weight) + self.bias.val().unsqueeze();
        tokens.reshape([batch, gh * gw, d_model])
    }
}
