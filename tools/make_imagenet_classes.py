"""Write swinref/data/imagenet1k_classes.tsv: index, WordNet synset and short name of the ImageNet-1K classes.

The synsets come from timm's data/_info/imagenet_synsets.txt (the class order every ImageNet-1K checkpoint uses)
and the short names from torchvision's weights metadata. Run with a Python that has timm and torchvision:

    python tools/make_imagenet_classes.py
"""

from __future__ import annotations

import pathlib

import timm
import torchvision
from torchvision.models._meta import _IMAGENET_CATEGORIES

OUT = pathlib.Path(__file__).resolve().parents[1] / "swinref" / "data" / "imagenet1k_classes.tsv"


def main() -> None:
    synsets_path = pathlib.Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    synsets = synsets_path.read_text().split()
    if len(synsets) != 1000 or len(_IMAGENET_CATEGORIES) != 1000:
        raise SystemExit(f"expected 1000 classes, got {len(synsets)} synsets and {len(_IMAGENET_CATEGORIES)} names")
    lines = [f"# ImageNet-1K classes: index, synset, name (timm {timm.__version__}, torchvision {torchvision.__version__})"]
    lines += [f"{i}\t{s}\t{name}" for i, (s, name) in enumerate(zip(synsets, _IMAGENET_CATEGORIES))]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(synsets)} classes)")


if __name__ == "__main__":
    main()
