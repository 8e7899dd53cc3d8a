use crate::backend::Backend;
use burn::config::Config;

use super::Vit;
use crate::Error;

/// How the encoder's tokens are pooled into one feature vector (the paper's Table IV).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Global average over the patch tokens (cls excluded), then `fc_norm`. MAE / MIMIC default.
    Gap,
    /// The cls token after the final `norm`.
    Cls,
}

impl Pool {
    /// Parses `gap` / `avg` or `cls` / `token`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "gap" | "avg" => Ok(Pool::Gap),
            "cls" | "token" => Ok(Pool::Cls),
            other => Err(Error::Config(format!(
                "unknown pooling '{other}' (expected gap or cls)"
            ))),
        }
    }
}

/// Configuration of a [`Vit`] encoder (with an optional classification head).
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Input side in pixels (square images).
    pub img_size: usize,
    /// Patch side in pixels; must divide `img_size`.
    pub patch_size: usize,
    /// Token width.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block; must divide `d_model`.
    pub n_heads: usize,
    /// Input channels. Default: 3 (grey images are replicated).
    #[config(default = 3)]
    pub in_chans: usize,
    /// MLP hidden width as a multiple of `d_model`. Default: 4.0 (ViT paper).
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Classes of the linear head; 0 means no head (features only). Default: 0.
    #[config(default = 0)]
    pub n_classes: usize,
    /// Token pooling. Default: GAP + `fc_norm` (MAE fine-tuning, MIMIC).
    #[config(default = "Pool::Gap")]
    pub pool: Pool,
    /// Stochastic depth rate of the last block; rates rise linearly from 0. Default: 0.0.
    #[config(default = 0.0)]
    pub drop_path: f64,
    /// Keep the position embedding fixed (the MAE sin-cos table) instead of learning it.
    /// Default: false (fine-tuning learns it, initialised from the sin-cos table).
    #[config(default = false)]
    pub fixed_pos_embed: bool,
}

/// A named preset: the timm model name and its architecture.
pub struct Preset {
    /// timm-style name, e.g. `vit_base_patch16_224`.
    pub name: &'static str,
    /// What the preset is for.
    pub about: &'static str,
    img_size: usize,
    patch_size: usize,
    d_model: usize,
    depth: usize,
    n_heads: usize,
}

/// The presets known to [`VitConfig::preset`]: the paper's ViTs at 224 px (timm names and
/// sizes, Dosovitskiy et al. / DeiT) and small ones for CPU training and tests.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "vit_tiny_patch16_224",
        about: "ViT-Ti/16 (DeiT-Ti), 5.7M parameters",
        img_size: 224,
        patch_size: 16,
        d_model: 192,
        depth: 12,
        n_heads: 3,
    },
    Preset {
        name: "vit_small_patch16_224",
        about: "ViT-S/16 (DeiT-S), 22M parameters",
        img_size: 224,
        patch_size: 16,
        d_model: 384,
        depth: 12,
        n_heads: 6,
    },
    Preset {
        name: "vit_base_patch16_224",
        about: "ViT-B/16, 86M parameters: the MIMIC paper's model",
        img_size: 224,
        patch_size: 16,
        d_model: 768,
        depth: 12,
        n_heads: 12,
    },
    Preset {
        name: "vit_large_patch16_224",
        about: "ViT-L/16, 304M parameters",
        img_size: 224,
        patch_size: 16,
        d_model: 1024,
        depth: 24,
        n_heads: 16,
    },
    Preset {
        name: "vit_cpu_patch6_48",
        about: "48 px / patch 6 (64 tokens), d 128, 6 blocks: trains on a 2-core CPU",
        img_size: 48,
        patch_size: 6,
        d_model: 128,
        depth: 6,
        n_heads: 4,
    },
    Preset {
        name: "vit_toy_patch8_32",
        about: "32 px / patch 8 (16 tokens), d 64, 2 blocks: for tests",
        img_size: 32,
        patch_size: 8,
        d_model: 64,
        depth: 2,
        n_heads: 2,
    },
];

impl VitConfig {
    /// The configuration of a named preset (see [`PRESETS`]), without a head.
    pub fn preset(name: &str) -> crate::Result<Self> {
        let p = PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
            Error::Config(format!(
                "unknown model preset '{name}' (known: {})",
                names.join(", ")
            ))
        })?;
        Ok(VitConfig::new(
            p.img_size,
            p.patch_size,
            p.d_model,
            p.depth,
            p.n_heads,
        ))
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Patch tokens per image (cls excluded).
    pub fn n_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// MLP hidden width, as timm computes it (`int(d_model * mlp_ratio)`).
    pub fn d_hidden(&self) -> usize {
        (self.d_model as f64 * self.mlp_ratio) as usize
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> crate::Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.patch_size == 0
            || self.img_size == 0
            || !self.img_size.is_multiple_of(self.patch_size)
        {
            return fail(format!(
                "patch size {} must divide image size {}",
                self.patch_size, self.img_size
            ));
        }
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return fail(format!(
                "{} heads must divide d_model {}",
                self.n_heads, self.d_model
            ));
        }
        if !self.d_model.is_multiple_of(4) {
            return fail(format!(
                "d_model {} must be a multiple of 4 (sin-cos table)",
                self.d_model
            ));
        }
        if self.depth == 0 || self.in_chans == 0 || self.mlp_ratio <= 0.0 {
            return fail("depth, in_chans and mlp_ratio must be positive".into());
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return fail(format!("drop_path {} must be in [0, 1)", self.drop_path));
        }
        Ok(())
    }

    /// Builds the encoder with fresh weights (timm's init: truncated normal 0.02 for linear
    /// weights, zero biases, sin-cos position table).
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<Vit<B>> {
        self.validate()?;
        let model = Vit::new(self, device);
        super::materialize(&model);
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_unknown_names_are_listed() {
        for p in PRESETS {
            VitConfig::preset(p.name).unwrap().validate().unwrap();
        }
        let err = VitConfig::preset("vit_huge").unwrap_err().to_string();
        assert!(
            err.contains("vit_huge") && err.contains("vit_base_patch16_224"),
            "{err}"
        );
    }

    #[test]
    fn bad_sizes_are_rejected() {
        let c = VitConfig::new(50, 16, 64, 2, 2);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must divide image size"));
        let c = VitConfig::new(32, 8, 64, 2, 3);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("heads must divide"));
    }
}
