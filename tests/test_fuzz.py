"""A short run of the checkpoint fuzzer (tools/fuzz_checkpoints.py) in this process: mutated peer-written files of
every container and layout must load or end in swinref's own error with a short message. The long run (100,000+
cases in worker processes with memory and time limits) is the tool's own command; see README "Malformed
checkpoints"."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from swinref.errors import SwinrefError

TOOL = Path(__file__).resolve().parent.parent / "tools" / "fuzz_checkpoints.py"
_spec = importlib.util.spec_from_file_location("fuzz_checkpoints", TOOL)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fuzz.prepare_seeds(tmp_path_factory.mktemp("seeds"), with_torch=False)


def test_every_container_is_a_seed(seeds):
    kinds = {kind for kind, _ in seeds}
    assert kinds == {"pth-zip", "pth-legacy", "pickle", "safetensors", "hf-dir", "npz"}
    assert all(path.exists() for _, path in seeds)


def test_short_fuzz_run_ends_in_loads_or_swinref_errors(seeds, tmp_path):
    # Two cases per seed, the same cases every run (a case is its number).
    results = [fuzz.execute(index, seeds, tmp_path) for index in range(2 * len(seeds))]
    outcomes = {r["outcome"] for r in results}
    bad = [r for r in results if r["outcome"] not in ("loaded", "swinref-error", "skipped")]
    assert not bad, bad[:3]
    assert "swinref-error" in outcomes


def test_mutations_change_the_file_and_are_reproducible(seeds, tmp_path):
    for index in range(len(seeds)):
        a, b = tmp_path / f"a{index}", tmp_path / f"b{index}"
        a.mkdir(), b.mkdir()
        try:
            pa, _ = fuzz.make_case(index, seeds, a)
        except SwinrefError:  # a semantic edit of a seed that holds no Swin state dict (tests/data/pth/nested.pth)
            continue
        pb, _ = fuzz.make_case(index, seeds, b)
        read = (lambda p: b"".join(f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()) if p.is_dir()
                else p.read_bytes())
        assert read(pa) == read(pb)
