"""Write the golden cases under tests/data/golden with the `swinref golden export` command itself.

    python tools/make_golden_cases.py            # (re)writes every case; --force replaces the old ones

The cases are tiny (C = 8, window 4, images of 18-32 pixels) so that they stay a few hundred KB in git, and they
cover: no padding, timm's roll-then-pad on a size that needs padding at every stage (and a clamped last stage),
the pad-then-roll policy with a batch of two in float32, and attention probabilities.
Never edit the files by hand: change this script and run it again.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swinref import cli  # noqa: E402

OUT = ROOT / "tests" / "data" / "golden"
TINY = ["--variant", "T", "--embed-dim", "8", "--window", "4", "--classes", "10"]

CASES = {
    # 32x32: 8x8 then 4x4 tokens, both divide by the window; stage 1 is clamped to one 4x4 window without shift.
    "tiny_v1": TINY + ["--depths", "2,2", "--heads", "1,2", "--img", "32", "--seed", "0",
                       "--attn-probs", "layers.0.blocks.1"],
    # Patch 2 keeps the input (the largest array) small. 18x22: 9x11 tokens (padded to 12x12), merged to 5x6
    # (padded to 8x8, shifted: the attention probabilities of that block are kept), then 3x3 (window clamped to 3).
    "tiny_v1_timm_pad": TINY + ["--patch", "2", "--depths", "2,2,2", "--heads", "1,2,4", "--img", "18x22",
                                "--seed", "1", "--padding", "timm", "--attn-probs", "layers.1.blocks.1"],
    # A size that needs padding under pad-then-roll (official detection, Hugging Face, torchvision), B = 2, float32.
    "tiny_v1_pad_b2_f32": TINY + ["--patch", "2", "--depths", "2,2", "--heads", "1,2", "--img", "20x18",
                                  "--seed", "2", "--padding", "pad", "--batch", "2", "--dtype", "float32"],
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, args in CASES.items():
        # The recorded command is relative to the repository root, where this script runs it.
        out = str((OUT / name).relative_to(ROOT))
        code = cli.main(["golden", "export", *args, "--out", out, "--force"])
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    sys.exit(main())
