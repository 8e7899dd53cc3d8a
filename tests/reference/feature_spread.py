"""How much the pooled features of a checkpoint differ between images, and what a fresh dense
projection head (MIMIC's Linear-ReLU-Linear, Xavier init, zero biases) makes of them.

The MSCL term equals log(2B - 1) whatever its positives when all embeddings coincide, and its
gradient vanishes there; a mean pairwise cosine near 1 explains a contrastive loss that does
not move from that value (README.md, Results).

Usage (PyTorch + timm from PyPI; weights as `train-native export-web` or `finetune` write them,
timm key names; the CPU preset's architecture by default):
  python3 tests/reference/feature_spread.py --weights assets/web/model.safetensors \
      --images /path/to/ferplus/FER2013Train --n 128
"""

import argparse
import glob
import os

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--images", required=True, help="a folder of face images (PNG)")
    ap.add_argument("--n", type=int, default=128, help="images (the first N by name)")
    ap.add_argument("--img-size", type=int, default=48)
    ap.add_argument("--patch", type=int, default=6)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--classes", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)

    state = {k: v.float() for k, v in load_file(args.weights).items()}
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=args.img_size, patch_size=args.patch, embed_dim=args.dim, depth=args.depth,
        num_heads=args.heads, num_classes=args.classes, global_pool="avg", fc_norm=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("proj_head.")})
    model.eval()

    files = sorted(glob.glob(os.path.join(args.images, "*.png")))[:args.n]
    if len(files) < 2:
        raise SystemExit(f"{args.images}: fewer than 2 PNG files")
    size = (args.img_size, args.img_size)
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize(size), np.float32) / 255
                       for f in files])
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    x = torch.from_numpy(((pixels - mean) / std).transpose(0, 3, 1, 2).copy())
    off = ~torch.eye(len(files), dtype=torch.bool)

    def cosines(v):
        v = torch.nn.functional.normalize(v, dim=1)
        c = (v @ v.T)[off]
        return c.mean().item(), c.min().item()

    with torch.no_grad():
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        print(f"{len(files)} images, pooled features (after fc_norm):")
        print("  pairwise cosine mean %.3f, min %.3f" % cosines(f))
        print("  per-channel spread across images %.3f vs mean magnitude %.3f"
              % (f.std(0).mean().item(), f.mean(0).abs().mean().item()))
        for trial in range(3):
            fc1 = torch.nn.Linear(args.dim, args.dim)
            fc2 = torch.nn.Linear(args.dim, args.dim)
            for layer in (fc1, fc2):
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)
            z = fc2(torch.relu(fc1(f)))
            print("  fresh dense head %d: embedding cosine mean %.3f, min %.3f"
                  % ((trial + 1,) + cosines(z)))


if __name__ == "__main__":
    main()
