"""Reference values of the MAE forward pass and loss, written to tests/fixtures/.

The model follows facebookresearch/mae `models_mae.py` (MaskedAutoencoderViT): timm blocks
with LayerNorm eps 1e-6, positions added to the patch tokens before masking, masking by argsort
of per-patch noise (ascending noise is kept), cls token with its position prepended after
masking, a decoder that appends mask tokens, unshuffles with ids_restore and adds its own
positions, and a loss on patchify(imgs) (channel fastest) with the per-patch target normalised
by its mean and *unbiased* variance, averaged over removed patches only. It is re-stated here
in PyTorch so that the noise can be given instead of drawn.

Writes:
  mae_toy_full.pth    {"model": state_dict} with the official key names, f32, random weights
                      (ViT 32 px / patch 8 / d 64 / 2 blocks / 2 heads; decoder 32 / 1 / 2)
  mae_reference.json  images, noise, and the mask, ids_restore, predictions and both losses

Regenerate (PyTorch + timm from PyPI):
  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch timm
  /tmp/ref/bin/python tests/reference/make_mae_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import Block, PatchEmbed
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "fixtures"


def sincos_2d(dim, grid, cls_token):
    """MAE's get_2d_sincos_pos_embed: first half of the channels encodes the column."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


class Mae(nn.Module):
    def __init__(self, img=32, patch=8, dim=64, depth=2, heads=2, ddim=32, ddepth=1, dheads=2):
        super().__init__()
        self.patch = patch
        ln = lambda d, **kw: nn.LayerNorm(d, eps=1e-6, **kw)
        self.patch_embed = PatchEmbed(img, patch, 3, dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(sincos_2d(dim, img // patch, True), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(dim, heads, 4.0, qkv_bias=True, norm_layer=ln) for _ in range(depth)])
        self.norm = ln(dim)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_2d(ddim, img // patch, True), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(ddim, dheads, 4.0, qkv_bias=True, norm_layer=ln) for _ in range(ddepth)])
        self.decoder_norm = ln(ddim)
        self.decoder_pred = nn.Linear(ddim, patch * patch * 3)
        assert n == (img // patch) ** 2

    def patchify(self, imgs):
        p = self.patch
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], 3, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p * p * 3)

    def random_masking(self, x, mask_ratio, noise):
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, length])
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio, noise):
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        n_mask = ids_restore.shape[1] + 1 - x.shape[1]
        mask_tokens = self.mask_token.repeat(x.shape[0], n_mask, 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def loss(self, imgs, pred, mask, norm_pix):
        target = self.patchify(imgs)
        if norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as MAE
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()


def main():
    torch.manual_seed(0)
    model = Mae().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("pos_embed"):
                continue  # the fixed sin-cos tables
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    imgs = torch.randn(2, 3, 32, 32, generator=g)
    noise = torch.rand(2, 16, generator=g)
    with torch.no_grad():
        latent, mask, ids_restore = model.forward_encoder(imgs, 0.75, noise)
        pred = model.forward_decoder(latent, ids_restore)
        loss_norm = model.loss(imgs, pred, mask, True)
        loss_plain = model.loss(imgs, pred, mask, False)
    torch.save({"model": model.state_dict()}, OUT / "mae_toy_full.pth")
    ref = {
        "torch": torch.__version__,
        "mask_ratio": 0.75,
        "images": imgs.flatten().tolist(),
        "noise": noise.flatten().tolist(),
        "mask": mask.flatten().tolist(),
        "ids_restore": ids_restore.flatten().tolist(),
        "latent": latent.flatten().tolist(),
        "pred": pred.flatten().tolist(),
        "patchified": model.patchify(imgs).flatten().tolist(),
        "loss_norm_pix": loss_norm.item(),
        "loss_plain": loss_plain.item(),
    }
    (OUT / "mae_reference.json").write_text(json.dumps(ref))
    print("wrote", OUT / "mae_toy_full.pth", OUT / "mae_reference.json",
          "loss", loss_norm.item(), loss_plain.item())


if __name__ == "__main__":
    main()
