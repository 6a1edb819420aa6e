"""Write swinref/data/kinetics400_classes.tsv: index and name of the Kinetics-400 classes.

The names come from torchvision's weights metadata (torchvision.models._meta._KINETICS400_CATEGORIES, the class
order of its swin3d_* weights and of the official Video Swin Kinetics-400 checkpoints they were ported from). Run
with a Python that has torchvision:

    python tools/make_kinetics_classes.py
"""

from __future__ import annotations

import pathlib

import torchvision
from torchvision.models._meta import _KINETICS400_CATEGORIES

OUT = pathlib.Path(__file__).resolve().parents[1] / "swinref" / "data" / "kinetics400_classes.tsv"


def main() -> None:
    if len(_KINETICS400_CATEGORIES) != 400:
        raise SystemExit(f"expected 400 classes, got {len(_KINETICS400_CATEGORIES)}")
    lines = [f"# Kinetics-400 classes: index, name (torchvision {torchvision.__version__})"]
    lines += [f"{i}\t{name}" for i, name in enumerate(_KINETICS400_CATEGORIES)]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(_KINETICS400_CATEGORIES)} classes)")


if __name__ == "__main__":
    main()
