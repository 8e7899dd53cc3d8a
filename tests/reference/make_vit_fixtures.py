"""Reference fixtures for mimic's ViT parity tests, produced with PyTorch + timm.

Writes into tests/fixtures/ (committed; a few MB):
  vit_toy.safetensors     timm ViT 32 px / patch 8 / d 64 / 2 blocks / 5 classes, GAP + fc_norm
  vit_ti3.pth             timm vit_tiny_patch16_224 cut to 3 blocks, 8 classes, cls pooling,
                          saved MAE-style as {"model": state_dict} in f16 (keeps the file small;
                          the reference outputs are computed from the same f16-rounded weights)
  face32.png, face224.png a face crop of skimage's astronaut photo (public domain)
  vit_reference.json      logits and pooled features for both models on those images, the MAE
                          sin-cos table and a 14x14 -> 7x7 position-embedding resize

Regenerate (needs the photo set beside the repository, as in CI):
  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch timm safetensors pillow
  /tmp/ref/bin/python tests/reference/make_vit_fixtures.py [--photos ../shared/data/photos]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def randomise(model, seed):
    """Give every parameter non-trivial values (LayerNorm gains and all biases included) so
    that a wrongly mapped tensor changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def load_image(path):
    """The preprocessing mimic's predict applies: RGB in [0, 1], ImageNet mean/std, CHW."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)
    return ((x - MEAN) / STD).unsqueeze(0)


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model.forward_head(model.forward_features(x))
    return {"logits": logits[0].tolist(), "features": feats[0].tolist()}


def mae_sincos_2d(d_model, grid_size, cls_token):
    """facebookresearch/mae util/pos_embed.py get_2d_sincos_pos_embed, written out in numpy."""
    def one_d(d, pos):
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid_size, dtype=np.float32)
    gw = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = np.concatenate([one_d(d_model // 2, grid[0]), one_d(d_model // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, d_model]), emb], axis=0)
    return emb


def mae_resize(pos_embed, new_grid):
    """facebookresearch/mae util/pos_embed.py interpolate_pos_embed (one prefix token)."""
    d = pos_embed.shape[-1]
    old = int((pos_embed.shape[1] - 1) ** 0.5)
    prefix, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(-1, old, old, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([prefix, grid], dim=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=str(HERE.parents[2] / "shared" / "data" / "photos"))
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)

    # A face crop of the astronaut photo at both model sizes.
    astronaut = Image.open(Path(args.photos) / "skimage-data/skimage/data/astronaut.png")
    face = astronaut.convert("RGB").crop((150, 40, 330, 220))
    for size in (32, 224):
        face.resize((size, size), Image.BILINEAR).save(OUT / f"face{size}.png")
    ref = {}

    toy = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64,
        depth=2, num_heads=2, num_classes=5, global_pool="avg", class_token=True,
    )
    randomise(toy, 1)
    save_file({k: v.contiguous() for k, v in toy.state_dict().items()}, OUT / "vit_toy.safetensors")
    ref["toy"] = outputs(toy, load_image(OUT / "face32.png"))

    ti = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=3, num_classes=8, global_pool="token",
    )
    randomise(ti, 2)
    ti = ti.half().float()  # the reference uses exactly the weights stored in f16
    torch.save({"model": {k: v.half() for k, v in ti.state_dict().items()}, "epoch": 3},
               OUT / "vit_ti3.pth")
    ref["ti3"] = outputs(ti, load_image(OUT / "face224.png"))

    ref["sincos_d16_g4"] = mae_sincos_2d(16, 4, True).astype(np.float32).ravel().tolist()
    pos = torch.randn(1, 1 + 14 * 14, 16, generator=torch.Generator().manual_seed(3))
    ref["resize_in"] = pos.ravel().tolist()
    ref["resize_14_to_7"] = mae_resize(pos, 7).ravel().tolist()
    ref["versions"] = {"torch": torch.__version__, "timm": timm.__version__}

    (OUT / "vit_reference.json").write_text(json.dumps(ref))
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
