"""A hostile PyTorch checkpoint for the loader's safety test: tests/fixtures/hostile.pth.

torch.save pickles an object whose __reduce__ calls os.system, so unpickling the file with
Python's pickle (torch.load(weights_only=False)) would run a shell command that creates
/tmp/mimic-pickle-ran. mimic's reader must refuse the file without running anything.

Regenerate: python tests/reference/make_hostile_fixtures.py   (PyTorch from PyPI)
"""

import os
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "hostile.pth"


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mimic-pickle-ran",))


def main():
    state = {"model": {"cls_token": torch.zeros(1, 1, 4)}, "payload": RunsCode()}
    torch.save(state, OUT)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
