"""Golden cases: the input and weight rules rebuilt from scratch, export/compare round trips, every refusal.

The committed cases under tests/data/golden were written by tools/make_golden_cases.py (through the CLI); here
they are read back, checked against today's forward pass, and used as the candidate of deliberately broken copies.
"""

from __future__ import annotations

import dataclasses

import json
import math
import os
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import swinref
from swinref.plan import POLICIES
from swinref import cli
from swinref.golden import (
    GoldenError,
    assert_matches,
    compare,
    compare_case,
    format_report,
    golden_input,
    load_candidate,
    load_mapping,
    read_case,
    sha256_le,
    timm_state_dict,
)
from swinref.golden.case import MANIFEST, NPZ, SAFETENSORS
from swinref.params import counter_uniform, init_params

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / MANIFEST).exists())
TINY = ["--variant", "T", "--embed-dim", "8", "--window", "4", "--classes", "10", "--depths", "2,2",
        "--heads", "1,2", "--img", "32"]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    """A fresh tiny case exported by the CLI (with attention probabilities), shared by the module's tests."""
    out = tmp_path_factory.mktemp("golden") / "case"
    assert cli.main(["golden", "export", *TINY, "--seed", "3", "--attn-probs", "layers.0.blocks.1",
                     "--out", str(out)]) == 0
    return out


def _arrays(case: Path) -> dict[str, np.ndarray]:
    return dict(read_case(case).arrays)


# ----------------------------------------------------------------------------------------------------------------
# The counter rule, reimplemented with Python integers only (what a C / Rust / JavaScript port does).

M64 = (1 << 64) - 1


def py_fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def py_splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def py_r(key: str, i: int) -> float:
    return ((py_splitmix64((py_fnv1a64(key) + i) & M64) >> 11) * 2.0 ** -53) * 2.0 - 1.0


def test_reference_vectors_of_the_hashes():
    # Published values: FNV-1a 64 of "" and "a"; SplitMix64's first output from state 0.
    assert py_fnv1a64("") == 0xCBF29CE484222325
    assert py_fnv1a64("a") == 0xAF63DC4C8601EC8C
    assert py_splitmix64(0) == 0xE220A8397B1DCDAF


def test_counter_uniform_equals_the_integer_reimplementation():
    for key in ("input:0", "7:layers.0.blocks.1.attn.qkv.weight", "ünïcode"):
        want = np.array([py_r(key, i) for i in range(300)])
        assert np.array_equal(counter_uniform(key, 300), want)
    # Counters wrap modulo 2**64: find a key whose hash is near the top and cross the boundary.
    got = counter_uniform("input:0", 3)
    assert got.min() >= -1.0 and got.max() < 1.0


@pytest.mark.parametrize("case", CASES)
def test_committed_input_and_weights_rebuild_bit_for_bit(case):
    gc = read_case(GOLDEN / case)
    man = gc.manifest
    inp = man["input"]
    dtype = man["dtype"]
    n = math.prod(inp["shape"])
    x = np.array([inp["scale"] * py_r(inp["key"], i) for i in range(n)], dtype=np.float64)
    x = x.astype(dtype).reshape(inp["shape"])
    assert x.tobytes() == gc.arrays["input"].astype(gc.arrays["input"].dtype.newbyteorder("<")).tobytes()
    assert sha256_le(x) == inp["sha256"]
    # Weights: offset + scale * r per the documented (offset, scale) table, then the dtype cast.
    seed = man["weights"]["seed"]
    for name, shape in man["weights"]["shapes"].items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "relative_position_bias_table":
            offset, scale = 0.0, 0.5
        elif leaf == "weight" and (".norm" in name or name.startswith("norm.")):
            offset, scale = 1.0, 0.1
        elif leaf == "bias":
            offset, scale = 0.0, 0.1
        else:
            offset, scale = 0.0, 1.0 / math.sqrt(math.prod(shape[1:]))
        key = f"{seed}:{name}"
        w = np.array([offset + scale * py_r(key, i) for i in range(math.prod(shape))]).astype(dtype).reshape(shape)
        assert sha256_le(w) == man["weights"]["sha256"][name], name


def test_golden_input_follows_the_rule():
    x = golden_input(5, (2, 3, 4, 4), "float32")
    assert x.dtype == np.float32 and x.shape == (2, 3, 4, 4)
    assert np.array_equal(x.reshape(-1), (2.0 * np.array([py_r("input:5", i) for i in range(96)])).astype(np.float32))


def test_sha256_is_of_little_endian_bytes():
    a = np.arange(6, dtype=">f8").reshape(2, 3)
    import hashlib

    assert sha256_le(a) == hashlib.sha256(struct.pack("<6d", *range(6))).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The committed cases.


@pytest.mark.parametrize("case", CASES)
def test_committed_case_matches_todays_forward_pass(case):
    gc = read_case(GOLDEN / case)
    man = gc.manifest
    assert man["format"] == "swinref-golden" and man["format_version"] == 1
    assert [p["name"] for p in man["points"]] == swinref.point_names(gc.config, attn_probs=man["attn_probs"])
    for p in man["points"]:
        assert p["tolerance"]["float32"] > 0
        assert p["shape"] == list(gc.arrays[p["name"]].shape)
    params = init_params(gc.config, seed=man["weights"]["seed"], dtype="float64")
    model = swinref.from_params(params, gc.config, dtype=man["dtype"], policy=gc.policy)
    trace = model.trace(gc.arrays["input"], attn_probs=man["attn_probs"])
    report = compare_case(gc, trace, strict=True)
    assert report["verdict"] == "pass", format_report(report)


@pytest.mark.parametrize("case", CASES)
def test_committed_case_was_made_by_its_recorded_command(case, tmp_path, capsys):
    man = read_case(GOLDEN / case).manifest
    words = shlex.split(man["command"])
    assert words[:3] == ["swinref", "golden", "export"]
    args = words[3:]
    args[args.index("--out") + 1] = str(tmp_path / "again")
    code, _, err = run(capsys, "golden", "export", *args)
    assert code == 0, err
    again = read_case(tmp_path / "again")
    assert again.manifest["config"] == man["config"] and again.manifest["input"] == man["input"]
    assert again.manifest["weights"] == man["weights"]
    report = compare_case(read_case(GOLDEN / case), again.arrays, strict=True)
    assert report["verdict"] == "pass", format_report(report)


def test_commands_in_the_script_match_the_cases():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_golden_cases
    finally:
        sys.path.pop(0)
    assert sorted(make_golden_cases.CASES) == CASES


# ----------------------------------------------------------------------------------------------------------------
# Round trip and the failures compare must name.


def test_round_trip_passes_in_every_array_format(case_dir, tmp_path, capsys):
    for candidate in (case_dir / SAFETENSORS, case_dir / NPZ):
        code, out, err = run(capsys, "golden", "compare", case_dir, candidate, "--json", "--strict")
        assert code == 0, out + err
        rep = json.loads(out)
        assert rep["verdict"] == "pass" and rep["first_failure"] is None
        assert all(r["max_abs"] == 0 for r in rep["points"])
    npy = tmp_path / "npy"
    npy.mkdir()
    for k, v in _arrays(case_dir).items():
        np.save(npy / f"{k}.npy", v)
    code, out, _ = run(capsys, "golden", "compare", case_dir, npy)
    assert code == 0 and "verdict: PASS" in out


def test_manifest_contents(case_dir):
    gc = read_case(case_dir)
    man = gc.manifest
    assert man["dtype"] == "float64" and gc.policy == "torchvision" and man["batch"] == 1
    assert man["config"]["embed_dim"] == 8 and man["weights"]["source"] == "seed" and man["weights"]["seed"] == 3
    assert man["input"]["key"] == "input:3" and man["input"]["shape"] == [1, 3, 32, 32]
    names = [p["name"] for p in man["points"]]
    assert names[0] == "patch_embed" and names[-1] == "logits"
    assert names.index("layers.0.blocks.1.attn_probs") < names.index("layers.0.blocks.1.attn")
    assert "swinref golden export" in man["command"] and "--seed 3" in man["command"]
    for p in man["points"]:
        tol = p["tolerance"]
        assert tol["float64"] < tol["float32"]
        assert tol["float32"] >= 10 * p["float32_deviation"]


@pytest.mark.parametrize("point", ["patch_embed", "layers.0.blocks.1.attn", "layers.0.downsample", "logits"])
def test_perturbed_point_fails_and_is_named_first(case_dir, point):
    gc = read_case(case_dir)
    names = gc.point_names
    tol = gc.point(point)["tolerance"]["float64"]
    # A real bug moves every later point too: perturb this point and everything after it.
    arrays = dict(gc.arrays)
    for name in names[names.index(point):]:
        a = arrays[name].copy()
        a.reshape(-1)[a.size // 2] += 3 * gc.point(name)["tolerance"]["float64"]
        arrays[name] = a
    report = compare_case(gc, arrays)
    assert report["verdict"] == "fail" and report["first_failure"] == point
    assert compare_case(gc, arrays, tolerance_scale=4)["verdict"] == "pass"
    row = next(r for r in report["points"] if r["name"] == point)
    assert row["status"] == "fail" and row["max_abs"] == pytest.approx(3 * tol, rel=1e-6)
    assert row["worst_index"] == list(np.unravel_index(gc.arrays[point].size // 2, gc.arrays[point].shape))
    # Below the tolerance it passes.
    arrays = dict(gc.arrays)
    a = arrays[point].copy()
    a.reshape(-1)[0] += 0.5 * tol
    arrays[point] = a
    assert compare_case(gc, arrays)["verdict"] == "pass"


@pytest.mark.parametrize("bug,first", [("window policy", "layers.0.blocks.1.attn"),
                                       ("merge order", "layers.0.downsample"),
                                       ("transposed bias index", "layers.0.blocks.1.attn_probs")])
def test_typical_port_bugs_are_located(bug, first):
    """A float32 swinref with one deliberate porting mistake: compare must fail at exactly the mistaken point."""
    case = "tiny_v1" if bug == "transposed bias index" else "tiny_v1_timm_pad"
    gc = read_case(GOLDEN / case)
    man = gc.manifest
    p = init_params(gc.config, seed=man["weights"]["seed"], dtype="float64")
    policy = POLICIES[gc.policy]
    if bug == "window policy":  # pad-then-roll where timm rolls, then pads
        policy = dataclasses.replace(policy, v1=dataclasses.replace(policy.v1, roll_before_pad=False))
    if bug == "merge order":  # concat (0,0),(0,1),(1,0),(1,1) instead of (0,0),(1,0),(0,1),(1,1)
        C = p["layers.0.downsample.reduction.weight"].shape[1] // 4
        idx = np.r_[0:C, 2 * C:3 * C, C:2 * C, 3 * C:4 * C]
        for k in ("reduction.weight", "norm.weight", "norm.bias"):
            name = "layers.0.downsample." + k
            p[name] = p[name][..., idx]
    if bug == "transposed bias index":  # table rows read as (dw, dh) instead of (dh, dw) in one block
        name = "layers.0.blocks.1.attn.relative_position_bias_table"
        n = int(round(math.sqrt(p[name].shape[0])))
        p[name] = p[name].reshape(n, n, -1).transpose(1, 0, 2).reshape(p[name].shape)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    trace = swinref.forward_trace(p32, gc.arrays["input"].astype(np.float32), gc.config, policy=policy,
                                  attn_probs=man["attn_probs"])
    report = compare_case(gc, trace)
    assert report["verdict"] == "fail" and report["first_failure"] == first
    row = next(r for r in report["points"] if r["name"] == first)
    assert row["max_abs"] > 1000 * row["tolerance"]


def test_perturbed_file_fails_through_the_cli(case_dir, tmp_path, capsys):
    arrays = _arrays(case_dir)
    arrays["layers.1.blocks.0"] = arrays["layers.1.blocks.0"] + 1e-3
    np.savez(tmp_path / "bad.npz", **arrays)
    code, out, _ = run(capsys, "golden", "compare", case_dir, tmp_path / "bad.npz", "--json")
    rep = json.loads(out)
    assert code == 1 and rep["verdict"] == "fail" and rep["first_failure"] == "layers.1.blocks.0"
    assert [r["name"] for r in rep["points"] if r["status"] == "fail"] == ["layers.1.blocks.0"]
    code, out, _ = run(capsys, "golden", "compare", case_dir, tmp_path / "bad.npz")
    assert code == 1 and "first failure (likely bug location): layers.1.blocks.0" in out


def test_missing_extra_and_shape_mismatch_are_reported(case_dir):
    gc = read_case(case_dir)
    arrays = dict(gc.arrays)
    del arrays["norm"]
    arrays["my.extra"] = np.zeros(3)
    report = compare_case(gc, arrays)
    assert report["missing"] == ["norm"] and report["extra"] == ["my.extra"]
    assert report["verdict"] == "pass"  # what was given matches
    assert compare_case(gc, arrays, strict=True)["verdict"] == "fail"
    # [B, L, C] tokens where the golden point is [B, H, W, C]: a shape row with a hint, never a silent reshape.
    B, H, W, C = gc.arrays["layers.0.blocks.0"].shape
    arrays = dict(gc.arrays)
    arrays["layers.0.blocks.0"] = gc.arrays["layers.0.blocks.0"].reshape(B, H * W, C)
    report = compare_case(gc, arrays)
    row = next(r for r in report["points"] if r["name"] == "layers.0.blocks.0")
    assert report["verdict"] == "fail" and row["status"] == "shape" and "BLC->BHWC" in row["note"]
    assert report["first_failure"] == "layers.0.blocks.0"
    text = format_report(report)
    assert "SHAPE" in text and "missing (" not in text


def test_explicit_reshapes(case_dir, tmp_path, capsys):
    gc = read_case(case_dir)
    blc = {k: (v.reshape(v.shape[0], -1, v.shape[-1]) if v.ndim == 4 and ".attn_probs" not in k and k != "input"
               else v) for k, v in gc.arrays.items()}
    assert compare_case(gc, blc, reshape="BLC->BHWC", strict=True)["verdict"] == "pass"
    nchw = {k: (np.transpose(v, (0, 3, 1, 2)) if v.ndim == 4 and ".attn_probs" not in k and k != "input" else v)
            for k, v in gc.arrays.items()}
    assert compare_case(gc, nchw)["verdict"] == "fail"
    np.savez(tmp_path / "nchw.npz", **nchw)
    code, out, err = run(capsys, "golden", "compare", case_dir, tmp_path / "nchw.npz", "--reshape", "NCHW->NHWC")
    assert code == 0, out + err
    code, _, err = run(capsys, "golden", "compare", case_dir, tmp_path / "nchw.npz", "--reshape", "HWC")
    assert code == 2 and "unknown reshape" in err


def test_timm_and_hf_mappings(case_dir):
    gc = read_case(case_dir)
    timm_names = {"patch_embed": "patch_embed", "layers.0.blocks.0.attn": "layers.0.blocks.0.drop_path1",
                  "layers.0.blocks.1.attn_probs": "layers.0.blocks.1.attn.attn_drop",
                  "layers.0.downsample": "layers.1.downsample", "pooled": "head.global_pool", "logits": "head.fc",
                  "layers.1.blocks.1": "layers.1.blocks.1", "norm": "norm"}
    arrays = {timm_names[k]: v for k, v in gc.arrays.items() if k in timm_names}
    report = compare_case(gc, arrays, "timm")
    assert report["verdict"] == "pass" and report["extra"] == []
    assert {r["name"]: r["candidate_name"] for r in report["points"]} == timm_names
    # Without the mapping, timm's names are extras and the merge would not be found.
    assert compare_case(gc, arrays)["extra"]
    hf = {
        "swin.embeddings": gc.arrays["patch_embed"].reshape(1, 64, 8),
        "swin.encoder.layers.0.downsample": gc.arrays["layers.0.downsample"].reshape(1, 16, 16),
        "swin.encoder.layers.1.blocks.0.drop_path": gc.arrays["layers.1.blocks.0.attn"].reshape(1, 16, 16),
        "swin.layernorm": gc.arrays["norm"].reshape(1, 16, 16),
        "swin.pooler": gc.arrays["pooled"][..., None],
        "classifier": gc.arrays["logits"],
    }
    report = compare_case(gc, hf, "hf")
    assert report["verdict"] == "pass", format_report(report)
    assert next(r for r in report["points"] if r["name"] == "layers.0.downsample")["transform"] == "BLC->BHWC"


def test_mapping_file_and_bad_mappings(case_dir, tmp_path, capsys):
    mapping = {"format": "swinref-golden-mapping", "version": 1, "name": "mine",
               "points": [{"candidate": "stage{s}.block{b}.out", "golden": "layers.{s}.blocks.{b}"},
                          {"candidate": "merge{s}", "golden": "layers.{s-1}.downsample"}]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(mapping))
    gc = read_case(case_dir)
    arrays = {"stage0.block1.out": gc.arrays["layers.0.blocks.1"], "merge1": gc.arrays["layers.0.downsample"]}
    np.savez(tmp_path / "mine.npz", **arrays)
    code, out, err = run(capsys, "golden", "compare", case_dir, tmp_path / "mine.npz", "--mapping", path, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["mapping"] == "mine" and rep["counts"]["pass"] == 2
    assert {r["candidate_name"] for r in rep["points"]} == set(arrays)
    for bad, words in (({"points": []}, "not a swinref golden mapping"),
                       ({**mapping, "points": [{"candidate": "a", "golden": "b", "reshape": "XY"}]}, "reshape"),
                       ({**mapping, "points": [{"candidate": "a", "golden": "{i}"}]}, "does not define")):
        path.write_text(json.dumps(bad))
        code, _, err = run(capsys, "golden", "compare", case_dir, tmp_path / "mine.npz", "--mapping", path)
        assert code == 2 and words in err, err
    code, _, err = run(capsys, "golden", "compare", case_dir, tmp_path / "mine.npz", "--mapping", "nosuch")
    assert code == 2 and "built-in mapping" in err
    assert load_mapping("timm").match("layers.3.downsample")[0] == "layers.2.downsample"


def test_two_names_on_one_point_is_an_error(case_dir):
    gc = read_case(case_dir)
    with pytest.raises(GoldenError, match="not real numbers"):
        compare_case(gc, {"pooled": np.array(["a", "b"])})
    with pytest.raises(GoldenError, match="both map to the golden point 'pooled'"):
        compare_case(gc, {"pooled": gc.arrays["pooled"], "head.global_pool": gc.arrays["pooled"]}, "timm")


def test_float32_candidate_uses_float32_tolerances(case_dir):
    gc = read_case(case_dir)
    man = gc.manifest
    params = init_params(gc.config, seed=3, dtype="float64")
    model = swinref.from_params(params, gc.config, dtype="float32")
    trace = model.trace(gc.arrays["input"].astype(np.float32), attn_probs=man["attn_probs"])
    report = compare_case(gc, trace, strict=True)
    assert report["verdict"] == "pass"
    assert {r["tolerance_dtype"] for r in report["points"]} == {"float32"}
    assert all(r["ulp"] is not None for r in report["points"])
    # The same float32 arrays judged by the float64 tolerances would fail: the key is chosen per dtype.
    assert compare_case(gc, {k: v.astype(np.float64) for k, v in trace.items()})["verdict"] == "fail"


def test_non_finite_and_nothing_in_common(case_dir):
    gc = read_case(case_dir)
    arrays = dict(gc.arrays)
    arrays["pooled"] = np.full_like(arrays["pooled"], np.nan)
    report = compare_case(gc, arrays)
    assert report["first_failure"] == "pooled" and "non-finite" in format_report(report)
    report = compare_case(gc, {"foo": np.zeros(2)})
    assert report["verdict"] == "fail" and "no candidate array matches" in report["notes"][0]


def test_assert_matches(case_dir):
    gc = read_case(case_dir)
    assert assert_matches(dict(gc.arrays), case_dir)["verdict"] == "pass"
    arrays = dict(gc.arrays)
    arrays["layers.1.blocks.1.attn"] = arrays["layers.1.blocks.1.attn"] * 1.01
    with pytest.raises(AssertionError) as exc:
        assert_matches(arrays, case_dir)
    assert "first failure (likely bug location): layers.1.blocks.1.attn" in str(exc.value)


# ----------------------------------------------------------------------------------------------------------------
# Refusals: stale or foreign format, damaged arrays, bad candidates, unsafe writes.


def _copy(case_dir: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(case_dir, dst)
    return dst


def test_stale_and_foreign_versions_are_refused_with_the_command(case_dir, tmp_path, capsys):
    dst = _copy(case_dir, tmp_path)
    man = json.loads((dst / MANIFEST).read_text())
    for change, words in (({"format_version": 0}, "older than the version 1"),
                          ({"format_version": 7}, "newer than the version 1"),
                          ({"format": "someone-else"}, "not a swinref golden manifest")):
        (dst / MANIFEST).write_text(json.dumps({**man, **change}))
        code, _, err = run(capsys, "golden", "compare", dst, case_dir / NPZ)
        assert code == 2 and words in err, err
        assert "regenerate it with: swinref golden export" in err and "--seed 3" in err


def test_damaged_arrays_are_refused(case_dir, tmp_path, capsys):
    from safetensors.numpy import save_file

    dst = _copy(case_dir, tmp_path)
    arrays = _arrays(case_dir)
    arrays["layers.0.downsample"] = arrays["layers.0.downsample"].copy()
    arrays["layers.0.downsample"][0, 0, 0, 0] += 1e-12
    save_file(arrays, str(dst / SAFETENSORS))
    code, _, err = run(capsys, "golden", "compare", dst, case_dir / NPZ)
    assert code == 2 and "'layers.0.downsample' does not match its checksum" in err and "regenerate" in err
    (dst / SAFETENSORS).write_bytes(b"\x00" * 10)
    code, _, err = run(capsys, "golden", "compare", dst, case_dir / NPZ)
    assert code == 2 and "cannot read the arrays" in err


def test_bad_candidates_and_bad_golden_dirs(case_dir, tmp_path, capsys):
    for path, words in ((tmp_path / "none.npz", "does not exist"), (tmp_path, "without .npy files")):
        code, _, err = run(capsys, "golden", "compare", case_dir, path)
        assert code == 2 and words in err, err
    (tmp_path / "x.txt").write_text("hi")
    code, _, err = run(capsys, "golden", "compare", case_dir, tmp_path / "x.txt")
    assert code == 2 and "unknown file type" in err
    (tmp_path / "x.npz").write_bytes(b"garbage")
    code, _, err = run(capsys, "golden", "compare", case_dir, tmp_path / "x.npz")
    assert code == 2 and "cannot read candidate" in err
    code, _, err = run(capsys, "golden", "compare", tmp_path / "nocase", case_dir / NPZ)
    assert code == 2 and "not a golden case directory" in err
    with pytest.raises(GoldenError):
        load_candidate(tmp_path / "none.npz")


def test_export_refusals(case_dir, tmp_path, capsys):
    code, _, err = run(capsys, "golden", "export", *TINY, "--out", case_dir)
    assert code == 2 and "not empty" in err and "--force" in err
    code, _, err = run(capsys, "golden", "export", *TINY, "--attn-probs", "layers.5.blocks.0", "--out",
                       tmp_path / "a")
    assert code == 2 and "no block named layers.5.blocks.0" in err and "layers.0.blocks.0" in err
    code, _, err = run(capsys, "golden", "export", *TINY, "--seed", "1", "--weights", "x.pth", "--out",
                       tmp_path / "b")
    assert code == 2 and "not allowed with argument" in err
    code, _, err = run(capsys, "golden", "export", *TINY, "--out", tmp_path / "no" / "such" / "dir")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_force_replaces_and_failure_leaves_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "case"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code, _, err = run(capsys, "golden", "export", *TINY, "--seed", "4", "--out", out, "--force")
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted([MANIFEST, NPZ, SAFETENSORS])
    assert sorted(os.listdir(tmp_path)) == ["case"]  # no temporary directories left behind

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    code, _, err = run(capsys, "golden", "export", *TINY, "--out", tmp_path / "new")
    assert code == 2 and "disk full" in err
    code, _, err = run(capsys, "golden", "export", *TINY, "--out", out, "--force")
    assert code == 2 and "disk full" in err
    assert sorted(os.listdir(tmp_path)) == ["case"]
    assert read_case(out).manifest["weights"]["seed"] == 4  # the old case is intact


def test_export_from_a_checkpoint(tmp_path, capsys):
    ckpt = ROOT / "tests" / "data" / "peers" / "timm_v1_pad" / "model.safetensors"
    code, out, err = run(capsys, "golden", "export", "--weights", ckpt, "--img", "32", "--batch", "2",
                         "--dtype", "float32", "--policy", "timm", "--out", tmp_path / "c", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["dtype"] == "float32" and data["config"]["img_size"] == [32, 32]
    man = read_case(tmp_path / "c").manifest
    assert man["weights"]["source"] == "checkpoint" and len(man["weights"]["file_sha256"]) == 64
    assert man["input"]["key"] == "input:0" and man["input"]["shape"] == [2, 3, 32, 32]
    assert "--weights" in man["command"] and "--img 32" in man["command"]


def test_timm_state_dict_names():
    cfg = swinref.get_config("T", embed_dim=8, depths="2,2", heads="1,2", window=4, img=32, classes=10)
    sd = timm_state_dict(init_params(cfg, seed=0))
    assert "layers.1.downsample.reduction.weight" in sd and "head.fc.weight" in sd
    assert not any(k.startswith("layers.0.downsample") or k == "head.weight" for k in sd)
    # The inverse of the loader's timm translation: round trip through it.
    from swinref.checkpoints.layouts import timm

    back, _ = timm.to_canonical(sd)
    assert set(back) == set(init_params(cfg, seed=0))


# ----------------------------------------------------------------------------------------------------------------
# timm and transformers themselves, through the examples.


@pytest.mark.peers
@pytest.mark.parametrize("example, library, case", [
    ("golden_timm.py", "timm", "tiny_v1"),
    ("golden_timm.py", "timm", "tiny_v1_timm_pad"),
    ("golden_hf.py", "transformers", "tiny_v1"),
    ("golden_hf.py", "transformers", "tiny_v1_pad_b2_f32"),
])
def test_peer_matches_golden_case_via_example(example, library, case):
    pytest.importorskip(library)
    res = subprocess.run([sys.executable, str(ROOT / "examples" / example), str(GOLDEN / case)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verdict: PASS" in res.stdout and " 0 fail" in res.stdout


def test_example_skips_cleanly_without_torch():
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed here; the skip path is for environments without it")
    except ImportError:
        pass
    for example in ("golden_timm.py", "golden_hf.py", "golden_torchvision_video.py"):
        res = subprocess.run([sys.executable, str(ROOT / "examples" / example), str(GOLDEN / "tiny_v1")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "skipped" in res.stdout, example


# ----------------------------------------------------------------------------------------------------------------
# Backbone cases (issue 13): the pyramid points outs.{i}, and the mmdet / transformers SwinBackbone mappings
# checked against the real peers (torch-only; skipped cleanly without them).

BACKBONE = ["--variant", "T", "--embed-dim", "16", "--window", "4", "--classes", "0", "--depths", "1,1,2,1",
            "--heads", "1,2,4,8", "--img", "100x130", "--backbone"]


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden") / "backbone"
    assert cli.main(["golden", "export", *BACKBONE, "--out-indices", "0", "1", "2", "3", "--seed", "2",
                     "--attn-probs", "all", "--out", str(out)]) == 0
    return out


def test_backbone_case_records_the_pyramid(backbone_dir, capsys):
    gc = read_case(backbone_dir)
    assert gc.backbone and gc.out_indices == (0, 1, 2, 3) and gc.policy == "detection"
    assert gc.manifest["backbone"] is True and gc.manifest["out_indices"] == [0, 1, 2, 3]
    names = gc.point_names
    assert [n for n in names if n.startswith("outs.")] == ["outs.0", "outs.1", "outs.2", "outs.3"]
    assert "norm" not in names and "pooled" not in names and names[-1] == "outs.3"
    assert names.index("outs.0") < names.index("layers.0.downsample")  # recorded before the merge
    assert gc.point("outs.1")["layout"] == "[B, C, H, W]" and gc.point("outs.1")["shape"] == [1, 32, 13, 17]
    assert "--backbone --out-indices 0 1 2 3" in gc.manifest["command"]
    # The case is today's forward pass: features with out_indices under the generated backbone weights, placed as a
    # Model places them (export builds one).
    cfg = gc.config
    params = init_params(cfg, seed=2, dtype="float64", stage_norms=True)
    model = swinref.from_params(params, cfg, dtype="float64", policy="detection")
    outs = model.features(gc.arrays["input"])
    for i, o in enumerate(outs):
        np.testing.assert_array_equal(gc.arrays[f"outs.{i}"], o)
    code, out, err = run(capsys, "golden", "compare", backbone_dir, backbone_dir / NPZ, "--strict")
    assert code == 0 and "verdict: PASS" in out, out + err
    # A classifier case carries neither key (its manifest is what it was before backbone mode).
    assert "backbone" not in read_case(GOLDEN / CASES[0]).manifest


def test_backbone_export_of_some_stages(tmp_path):
    from swinref.golden import export_case

    cfg = swinref.get_config("T", embed_dim=16, window=4, classes=0, depths="1,1,2,1", heads="1,2,4,8", img="64")
    man = export_case(tmp_path / "c", cfg, seed=0, out_indices=[1])
    names = [p["name"] for p in man["points"]]
    assert names[-1] == "outs.1" and "outs.0" not in names and not any(n.startswith("layers.2") for n in names)
    assert man["policy"] == "detection" and man["out_indices"] == [1]
    with pytest.raises(GoldenError, match=r"0\.\.3"):
        export_case(tmp_path / "d", cfg, seed=0, out_indices=[7])


def test_backbone_mappings_by_name(backbone_dir):
    gc = read_case(backbone_dir)
    mm = {"patch_embed": gc.arrays["patch_embed"].reshape(1, -1, 16),
          "stages.0.downsample": gc.arrays["layers.0.downsample"].reshape(1, -1, 32),
          "stages.2.blocks.1.attn": gc.arrays["layers.2.blocks.1.attn"].reshape(1, -1, 64),
          "norm3": np.transpose(gc.arrays["outs.3"], (0, 2, 3, 1)).reshape(1, -1, 128)}
    report = compare_case(gc, mm, "mmdet")
    assert report["verdict"] == "pass" and report["extra"] == [], format_report(report)
    assert next(r for r in report["points"] if r["name"] == "outs.3")["transform"] == "BLC->BCHW"
    assert load_mapping("hf_backbone").match("hidden_states_norms.stage1")[0] == "outs.0"
    assert load_mapping("mmdet").match("stages.1.blocks.0.attn.w_msa.attn_drop")[0] == "layers.1.blocks.0.attn_probs"


def _hooked(model, mapping_name: str, wanted: set[str]) -> dict[str, np.ndarray]:
    """Register a forward hook on every module the mapping names (the way examples/golden_*.py do)."""
    mapping = load_mapping(mapping_name)
    arrays: dict[str, np.ndarray] = {}

    def keep(name, index):
        def hook(_module, _inputs, output):
            arrays[name] = (output if index is None else output[index]).detach().numpy()
        return hook

    for name, module in model.named_modules():
        found = mapping.match(name)
        if found is not None and found[0] in wanted:
            module.register_forward_hook(keep(name, found[1].output))
    return arrays


@pytest.mark.peers
@pytest.mark.parametrize("kind", ["det", "seg"])  # mmseg's SwinTransformer has mmdet's module names
def test_mmdet_mapping_against_mmdet(backbone_dir, kind):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import openmmlab
    finally:
        sys.path.remove(str(ROOT / "tools"))
    mm = openmmlab.import_openmmlab()
    if mm is None:
        pytest.skip("mmdet (with mmcv-lite and mmengine) is not installed")
    from swinref.checkpoints.layouts import openmmlab as mm_layout

    gc = read_case(backbone_dir)
    cfg = gc.config
    model = openmmlab.build(mm, kind, cfg).double()  # built in eval mode (its eval() returns None)
    params = init_params(cfg, seed=2, dtype="float64", stage_norms=True)
    state = {k: torch.from_numpy(v) for k, v in mm_layout.from_canonical(params, cfg).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing), (missing, unexpected)
    arrays = _hooked(model, "mmdet", set(gc.point_names))
    with torch.no_grad():
        outs = model(torch.from_numpy(gc.arrays["input"]))
    report = compare_case(gc, arrays, "mmdet", strict=True)
    assert report["verdict"] == "pass", format_report(report)
    assert report["counts"]["pass"] == len(gc.point_names)
    for i, o in enumerate(outs):  # mmdet's own return value is the pyramid
        np.testing.assert_allclose(o.numpy(), gc.arrays[f"outs.{i}"], rtol=0, atol=1e-10)


@pytest.mark.peers
def test_hf_backbone_mapping_against_transformers(backbone_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from swinref.checkpoints.layouts import transformers as hf_layout

    gc = read_case(backbone_dir)
    cfg = gc.config
    config = transformers.SwinConfig(
        image_size=list(cfg.img_size), patch_size=cfg.patch_size, num_channels=cfg.in_chans, embed_dim=cfg.embed_dim,
        depths=list(cfg.depths), num_heads=list(cfg.num_heads), window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
        layer_norm_eps=cfg.layer_norm_eps, out_features=[f"stage{i + 1}" for i in range(cfg.num_layers)],
        attn_implementation="eager")
    model = transformers.SwinBackbone(config).double().eval()
    params = init_params(cfg, seed=2, dtype="float64", stage_norms=True)
    norms = {k: v for k, v in params.items() if k[:4] == "norm" and k[4].isdigit()}
    canonical = {k: v for k, v in params.items() if k not in norms}
    state = {("swin." + k if not k.startswith("swin.") else k): torch.from_numpy(v)
             for k, v in hf_layout.from_canonical(canonical, cfg).items()}
    for name, value in norms.items():
        stage, leaf = name[4:].split(".")
        state[f"hidden_states_norms.stage{int(stage) + 1}.{leaf}"] = torch.from_numpy(value)
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("swin.layernorm")]  # the classifier's final norm
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing), (missing, unexpected)
    arrays = _hooked(model, "hf_backbone", set(gc.point_names))
    with torch.no_grad():
        result = model(torch.from_numpy(gc.arrays["input"]), output_attentions=True)
    report = compare_case(gc, arrays, "hf_backbone", strict=True)
    # transformers' eager softmax runs in float32 (examples/golden_hf.py): compare at float32 tolerances.
    if report["verdict"] != "pass":
        report = compare_case(gc, {k: v.astype(np.float32) for k, v in arrays.items()}, "hf_backbone", strict=True)
    assert report["verdict"] == "pass", format_report(report)
    assert report["counts"]["pass"] == len(gc.point_names)
    for i, o in enumerate(result.feature_maps):
        np.testing.assert_allclose(o.numpy(), gc.arrays[f"outs.{i}"], rtol=0, atol=1e-4)


def test_an_exported_case_is_a_candidate(tmp_path, capsys):
    """Two exported cases compare directly: the same model in float32 passes the float64 case, other weights on
    the same input fail it."""
    golden, same, other = tmp_path / "f64", tmp_path / "f32", tmp_path / "other"
    for out, extra in ((golden, []), (same, ["--dtype", "float32"]), (other, ["--seed", "5", "--input-seed", "0"])):
        code, _, err = run(capsys, "golden", "export", *TINY, *extra, "--out", out)
        assert code == 0, err
    code, out, err = run(capsys, "golden", "compare", golden, same, "--json", "--strict")
    report = json.loads(out)
    assert code == 0 and report["verdict"] == "pass" and report["candidate"] == str(same)
    assert {r["name"] for r in report["points"]} >= {"input", "logits"}
    code, out, _ = run(capsys, "golden", "compare", golden, other, "--json")
    assert code == 1 and json.loads(out)["verdict"] == "fail"
