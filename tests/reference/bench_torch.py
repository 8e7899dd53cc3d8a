"""The PyTorch side of mimic's speed comparison: the same models and training steps as
`train-native bench`, on the CPU with the same number of threads, printed as one JSON line in
the same shape (figures -> images_per_s).

  forward         inference (eval mode, no autograd) of the ViT
  optimizer step  forward + backward of a cross-entropy loss + AdamW (eps 1e-8, wd 0.05)
  mimic step      two views per image, Mixup, CE on soft targets + a supervised contrastive
                  term on the projected, L2-normalised features (positives: label distance
                  <= 0.5), AdamW
  mae step        the MAE forward of make_mae_fixtures.py (75 % masking, norm-pix loss) +
                  backward + AdamW (0.9, 0.95)

Usage (PyTorch + timm from PyPI):
  python tests/reference/bench_torch.py --batch 64 --steps 5 --threads 2
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_mae_fixtures import Mae  # noqa: E402

PRESETS = {  # name: (img, patch, dim, depth, heads, decoder dim, decoder depth, decoder heads)
    "vit_cpu_patch6_48": (48, 6, 128, 6, 4, 128, 2, 4),
    "vit_toy_patch8_32": (32, 8, 64, 2, 2, 32, 1, 2),
    "vit_tiny_patch16_224": (224, 16, 192, 12, 3, 512, 8, 16),
    "vit_small_patch16_224": (224, 16, 384, 12, 6, 512, 8, 16),
}


def vit(img, patch, dim, depth, heads, classes):
    return timm.models.vision_transformer.VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
        num_classes=classes, global_pool="avg", qkv_bias=True)


def measure(name, per_step, warmup, steps, fn):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return name, {"images_per_s": steps * per_step / secs, "peak_mib": peak}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_cpu_patch6_48", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="forward,step,mimic,mae")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    img, patch, dim, depth, heads, ddim, ddepth, dheads = PRESETS[args.model]
    b, c = args.batch, args.classes
    x = torch.randn(b, 3, img, img)
    y = torch.arange(b) % c
    figures = {}

    for part in args.only.split(","):
        if part == "forward":
            model = vit(img, patch, dim, depth, heads, c).eval()

            def fwd():
                with torch.no_grad():
                    model(x)
            k, v = measure("forward", b, args.warmup, args.steps, fwd)
        elif part == "step":
            model = vit(img, patch, dim, depth, heads, c).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8, weight_decay=0.05)

            def step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
            k, v = measure("optimizer step", b, args.warmup, args.steps, step)
        elif part == "mimic":
            model = vit(img, patch, dim, depth, heads, c).train()
            proj = torch.nn.Sequential(
                torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, 128))
            params = list(model.parameters()) + list(proj.parameters())
            opt = torch.optim.AdamW(params, lr=1e-4, eps=1e-8, weight_decay=0.05)
            views = torch.randn(2 * b, 3, img, img)
            targets = F.one_hot(torch.cat([y, y]), c).float()
            perm = torch.arange(2 * b).flip(0)

            def mimic():
                opt.zero_grad(set_to_none=True)
                lam = float(torch.distributions.Beta(1.0, 1.0).sample())
                xm = lam * views + (1 - lam) * views[perm]
                tm = lam * targets + (1 - lam) * targets[perm]
                feats = model.forward_head(model.forward_features(xm), pre_logits=True)
                ce = torch.sum(-tm * F.log_softmax(model.head(feats), 1), 1).mean()
                z = F.normalize(proj(feats), dim=1)
                logits = z @ z.T / 0.07
                not_self = 1.0 - torch.eye(2 * b)
                pos = ((tm[:, None, :] - tm[None, :, :]).abs().amax(-1) <= 0.5).float()
                pos = pos * not_self
                logits = logits - logits.max(1, keepdim=True).values.detach()
                log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
                con = -((pos * log_prob).sum(1) / pos.sum(1).clamp(min=1)).mean()
                (ce + 0.1 * con).backward()
                opt.step()
            k, v = measure("mimic step", b, args.warmup, args.steps, mimic)
        elif part == "mae":
            model = Mae(img, patch, dim, depth, heads, ddim, ddepth, dheads).train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                    lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05)
            n_patches = (img // patch) ** 2

            def mae():
                opt.zero_grad(set_to_none=True)
                noise = torch.rand(b, n_patches)
                latent, mask, ids_restore = model.forward_encoder(x, 0.75, noise)
                pred = model.forward_decoder(latent, ids_restore)
                model.loss(x, pred, mask, True).backward()
                opt.step()
            k, v = measure("mae step", b, args.warmup, args.steps, mae)
        else:
            sys.exit(f"--only: unknown measurement {part}")
        figures[k] = v
        print(f"{k:<26} {v['images_per_s']:>9.1f} images/s", file=sys.stderr)
    print(json.dumps({"model": args.model, "batch": b, "backend": f"torch {torch.__version__}",
                      "threads": torch.get_num_threads(), "figures": figures}))


if __name__ == "__main__":
    main()
