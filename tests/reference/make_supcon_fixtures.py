"""Reference values of the supervised contrastive loss, written to tests/fixtures/supcon.json.

The loss is computed as HobbitLong/SupContrast `losses.py` (SupConLoss, contrast_mode "all")
defines it, re-stated here in a few lines of PyTorch: features [bsz, n_views, dim] are laid out
view-major, self-contrast is masked out, the row max is subtracted, anchors without positives
contribute 0, and the result is scaled by temperature / base_temperature and averaged.

Regenerate: python tests/reference/make_supcon_fixtures.py   (PyTorch from PyPI)
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "supcon.json"


def supcon(features, labels, temperature=0.07, base_temperature=0.07):
    bsz, n_views, _ = features.shape
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float()
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # view-major
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    mask = mask.repeat(n_views, n_views)
    not_self = 1.0 - torch.eye(bsz * n_views)
    mask = mask * not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    pos = mask.sum(1)
    pos = torch.where(pos < 1e-6, torch.ones_like(pos), pos)
    mean_log_prob_pos = (mask * log_prob).sum(1) / pos
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(n_views, bsz).mean()


def main():
    g = torch.Generator().manual_seed(0)
    cases = []
    for bsz, dim, n_classes, temperature in [(6, 16, 3, 0.07), (9, 32, 4, 0.07), (5, 8, 5, 0.07)]:
        feats = F.normalize(torch.randn(bsz, 2, dim, generator=g), dim=-1)
        labels = torch.randint(0, n_classes, (bsz,), generator=g)
        cases.append({
            "features": torch.cat(torch.unbind(feats, dim=1), dim=0).tolist(),  # [2*bsz, dim]
            "labels": labels.tolist(),
            "temperature": temperature,
            "loss": supcon(feats, labels, temperature).item(),
        })
    OUT.write_text(json.dumps({"cases": cases, "torch": torch.__version__}))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
