"""Builds the FERPlus sample shipped in assets/ferplus-sample/ from a full FERPlus copy.

A seeded random choice of label.csv rows per split (rows the majority-vote rule drops are
kept too, so a run shows its drop report), skipping every image that has a pixel-identical
copy anywhere (the copy's DUPLICATES.txt) and the mislabelled frame fer0033120.png.
Images are re-encoded as compressed PNGs (same pixels); label rows are copied verbatim.

    python assets/ferplus-sample/make_sample.py /path/to/ferplus   (needs Pillow)
"""

import random
import sys
from pathlib import Path

from PIL import Image

COUNTS = {"FER2013Train": 2000, "FER2013Valid": 300, "FER2013Test": 400}
OUT = Path(__file__).resolve().parent


def main():
    src = Path(sys.argv[1])
    data = src / "data" if (src / "data").is_dir() else src
    dup = set()
    dup_file = src / "DUPLICATES.txt"
    if dup_file.exists():
        for line in dup_file.read_text().splitlines():
            if not line.startswith("#"):
                dup.update(Path(p).name for p in line.split("\t"))
    dup.add("fer0033120.png")

    rng = random.Random(2024)
    for split, n in COUNTS.items():
        rows = [r for r in (data / split / "label.csv").read_text().splitlines() if r.strip()]
        rows = [r for r in rows if r.split(",")[0] not in dup]
        chosen = sorted(rng.sample(rows, n))
        out = OUT / split
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.png"):
            old.unlink()
        (out / "label.csv").write_text("\n".join(chosen) + "\n")
        for row in chosen:
            name = row.split(",")[0]
            Image.open(data / split / name).save(out / name, "PNG", optimize=True)
        print(split, len(chosen))


if __name__ == "__main__":
    main()
