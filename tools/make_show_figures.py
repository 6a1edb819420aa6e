"""Write the figures of docs/show.md and the README into docs/figures/ (needs matplotlib: pip install '.[viz]').

    python tools/make_show_figures.py            # from the repository root

Every figure is drawn by swinref.show from arrays computed by swinref; the attention pictures use random weights
(no trained checkpoint is committed) on a synthetic image, so they show where attention can go, not what a trained
model looks at.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import swinref  # noqa: E402
from swinref import show  # noqa: E402
from swinref.config import get_config  # noqa: E402


def synthetic_image(size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3]: a smooth gradient with a bright disc and a dark bar, reproducible without any download."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.stack([0.3 + 0.5 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x * y], axis=-1)
    img[(y - 0.35) ** 2 + (x - 0.3) ** 2 < 0.03] = (0.95, 0.85, 0.2)
    img[(np.abs(y - 0.7) < 0.06) & (x > 0.45)] = (0.1, 0.1, 0.15)
    return (img * 255).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="directory (default docs/figures)")
    out = pathlib.Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    toy = get_config("T", img=16, window=2, depths=(2, 2), heads=(3, 6))
    tiny_t = get_config("T")
    pictures = {
        # The seeds' worked example: a 4x4 map, window 2, shift 1.
        "show-toy-windows.svg": show.picture("windows", toy, None, "official", stage=0, block=1),
        "show-toy-mask.svg": show.picture("mask", toy, None, "official", stage=0, block=1, window=3),
        # Swin-T's third stage at 224 (14x14 tokens, window 7, shift 3): the nine regions of the paper's figure.
        "show-t224-windows.png": show.picture("windows", tiny_t, None, None, stage=2, block=1),
        # The same stage at a detection size: padding, and the shift taken on the padded map.
        "show-t800x1333-windows.png": show.picture("windows", get_config("T", img=(800, 1333)), None, "detection",
                                                   stage=3, block=1),
        # A Video Swin clip, frame by frame: 8x36x36 pixels, 4x9x9 tokens, windows 2x5x5 shifted by 1x2x2.
        "show-swin3d-windows.png": show.picture("windows", get_config("swin3d_t", img=(8, 36, 36), window=(2, 5, 5)),
                                                stage=0, block=1),
        "show-t224-complexity.svg": show.picture("complexity", tiny_t, sizes=range(224, 1281, 64)),
        "show-t800x1333-reach.png": show.picture("reach", get_config("T", img=(800, 1333)), None, "detection",
                                                 stage=2, block=1),
        "show-reach-models-224.svg": show.reach_by_model(None, None),
        "show-reach-models-800x1333.svg": show.reach_by_model((800, 1333), "detection"),
    }
    model = swinref.random_model("T", dtype="float32")
    image = synthetic_image((224, 224))
    pictures["show-t224-attention.png"] = show.picture("attention", tiny_t, None, None, stage=1, block=1,
                                                       pixel=(100, 120), model=model, image=image)
    pictures["show-t224-rollout.png"] = show.picture("rollout", tiny_t, None, None, model=model, image=image)
    for name, pic in pictures.items():
        show.save(pic, str(out / name), dpi=60 if name.startswith("show-swin3d") else 100)  # a tall figure
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
