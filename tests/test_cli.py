"""The swinref command line, called through cli.main([...]): exit codes, JSON keys, error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swinref import cli

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# ---------------------------------------------------------------------------------------------------------------
# JSON output


def test_flops_json_keys_and_official_total(capsys):
    data = run_json(capsys, "flops", "T")
    assert {"params", "macs", "flops", "stages"} <= set(data)
    assert data["macs"] == 4_494_405_120 and data["flops"] == 2 * data["macs"]
    assert data["params"] == 28_288_354
    assert [s["stage"] for s in data["stages"]] == ["embed", 0, 1, 2, 3, "tail"]
    assert [s["resolution"] for s in data["stages"][1:5]] == [[56, 56], [28, 28], [14, 14], [7, 7]]
    assert len(data["complexity"]) == 4 and "items" not in data


def test_flops_conventions_and_items(capsys):
    data = run_json(capsys, "flops", "--variant", "B", "--convention", "torchvision", "--items")
    assert round(data["macs"] / 1e9, 3) == 15.431  # torchvision's published _ops for Swin-B
    assert data["convention"] == "torchvision" and data["includes"] and data["excludes"]
    assert sum(i["macs"] for i in data["items"]) == data["macs"]


def test_flops_batch_scales(capsys):
    one = run_json(capsys, "flops", "S")
    four = run_json(capsys, "flops", "S", "--batch", "4")
    assert four["macs"] == 4 * one["macs"] and four["params"] == one["params"]


def test_flops_sweep_json(capsys):
    data = run_json(capsys, "flops", "T", "--sweep", "224:1024:32")
    sizes = [r["size"] for r in data["sweep"]]
    assert sizes[0] == 224 and sizes[-1] == 1024 and len(sizes) == 26
    ratios = [r["ratio"] for r in data["sweep"]]
    assert ratios[-1] > ratios[0] > 1
    assert {"params", "macs", "flops", "stages"} <= set(data)


def test_params_json(capsys):
    data = run_json(capsys, "params", "swin_small_patch4_window7_224")
    assert data["params"] == 49_606_258
    assert {"params", "macs", "flops", "stages"} <= set(data)
    assert sum(s["params"] for s in data["stages"]) == data["params"]


def test_memory_json(capsys):
    data = run_json(capsys, "memory", "T", "--batch", "2", "--dtype", "float16")
    assert {"params", "macs", "flops", "stages", "peak_bytes"} <= set(data)
    assert data["stages"][0]["scores_bytes"] == 2 * (2 * 64 * 3 * 49 * 49)


def test_trace_json_list_of_steps(capsys):
    data = run_json(capsys, "trace", "T", "--img", "800x1333", "--batch", "2", "--policy", "detection")
    assert data["policy"] == "detection" and data["refusal"] is None
    steps = data["steps"]
    assert isinstance(steps, list) and all({"name", "shape"} <= set(s) for s in steps)
    by_name = {s["name"]: s for s in steps}
    assert by_name["patch_embed"]["shape"] == [2, 200, 334, 96]
    assert by_name["layers.0.blocks.1"]["kind"] == "SW-MSA" and by_name["layers.0.blocks.1"]["pad"] == [3, 2]
    assert by_name["logits"]["shape"] == [2, 1000]


def test_configs_json(capsys):
    rows = run_json(capsys, "configs")
    names = [r["name"] for r in rows]
    assert "swin_tiny_patch4_window7_224" in names and "swinv2_base_patch4_window8_256" in names
    assert next(r for r in rows if r["name"] == "swin_base_patch4_window7_224")["params"] == 87_768_224


@pytest.mark.parametrize("argv, key, value", [
    (["--img", "800x1333"], "image", [800, 1333]),
    (["--img", "384", "--window", "12"], "image", [384, 384]),
    (["--embed-dim", "64", "--heads", "2,4,8,16"], "params", None),
    (["--depths", "2,2,2", "--heads", "3,6,12"], "stages", None),
    (["--classes", "10"], "params", None),
    (["--patch", "2"], "image", [224, 224]),
])
def test_overrides_reach_the_config(capsys, argv, key, value):
    data = run_json(capsys, "flops", "T", *argv)
    if value is not None:
        assert data[key] == value
    base = run_json(capsys, "flops", "T")
    assert data != base


def test_depths_override_changes_stage_count(capsys):
    data = run_json(capsys, "flops", "--depths", "2,2,2", "--heads", "3,6,12")
    assert [s["stage"] for s in data["stages"]] == ["embed", 0, 1, 2, "tail"]


def test_aliases_timm_and_hf_names(capsys):
    a = run_json(capsys, "params", "t")
    b = run_json(capsys, "params", "swin_tiny_patch4_window7_224.ms_in1k")
    c = run_json(capsys, "params", "--variant", "microsoft/swin-tiny-patch4-window7-224")
    assert a["params"] == b["params"] == c["params"] == 28_288_354


# ---------------------------------------------------------------------------------------------------------------
# Tables


def test_tables_render(capsys):
    for argv in (["trace", "T", "--img", "250x300"], ["flops", "B", "--blocks", "--items"], ["params", "--tensors"],
                 ["memory", "L", "--batch", "16"], ["configs"], ["flops", "--sweep", "224:512:96"],
                 ["flops", "T", "--convention", "corrected", "--img", "230"]):
        code, out, err = run(capsys, *argv)
        assert code == 0 and out and not err, argv
    code, out, _ = run(capsys, "trace", "T", "--img", "250x300", "--policy", "detection")
    assert "patch_embed.pad" in out and "+2x0 at the end" in out
    code, out, _ = run(capsys, "trace", "T", "--img", "250x300")  # torchvision: a strided convolution crops
    assert "patch_embed.crop" in out
    code, out, _ = run(capsys, "flops", "T")
    assert "4.4944" in out and "MSA / W-MSA" in out


# ---------------------------------------------------------------------------------------------------------------
# Errors: message on stderr, exit code 2


@pytest.mark.parametrize("argv, message", [
    (["flops", "swin_tiny_patch4_window8_224"], "did you mean"),
    (["flops", "--variant", "tiny"], "unknown configuration"),
    (["flops", "T", "--heads", "5,6,12,24"], "do not divide"),
    (["trace", "T", "--img", "3"], "smaller than one 4x4 patch"),
    (["trace", "T", "--img", "12x"], "cannot read size"),
    (["flops", "T", "--depths", "2,2"], "give one head count per stage"),
    (["flops", "T", "--depths", "2,x,2"], "comma-separated integers"),
    (["flops", "T", "--sweep", "300:200"], "START:STOP"),
    (["flops", "T", "--variant", "B"], "two models given"),
    (["memory", "T", "--window", "0"], "window_size must be an integer >= 1"),
])
def test_bad_input_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["flops", "--convention", "nope"], ["trace", "--batch", "0"], ["trace", "--batch", "x"],
    ["frobnicate"], [], ["memory", "--dtype", "int8"], ["trace", "--window", "seven"],
])
def test_argparse_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage" in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "flops", "--help")
    assert code == 0 and "--convention" in out and "--img" in out


def test_same_model_positional_and_variant_is_fine(capsys):
    assert run(capsys, "params", "T", "--variant", "swin_tiny_patch4_window7_224", "--json")[0] == 0


def test_model_parser_is_reusable():
    import argparse

    parent = cli.model_parser(positional=False)
    p = argparse.ArgumentParser(parents=[parent])
    p.add_argument("image")
    args = p.parse_args(["cat.jpg", "--variant", "S", "--img", "256"])
    cfg = cli.config_from_args(args)
    assert cfg.depths == (2, 2, 18, 2) and cfg.img_size == (256, 256)


# ---------------------------------------------------------------------------------------------------------------
# No heavy imports: analysis and the analysis commands must not load numpy, numba or cupy.

HEAVY = ("numpy", "numba", "cupy")


def _modules_after(code: str) -> list[str]:
    probe = code + "\nimport sys\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'numpy','numba','cupy'}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_import_analysis_and_cli_is_light():
    assert _modules_after("import swinref.analysis, swinref.cli") == []


@pytest.mark.parametrize("argv", [["trace", "T"], ["flops", "B", "--items"], ["params"], ["memory"], ["configs"],
                                  ["flops", "--sweep", "224:512:32", "--json"], ["trace", "L", "--json"],
                                  ["trace", "T", "--backbone", "--img", "800x1333"],
                                  ["flops", "T", "--backbone", "--img", "800x1333", "--convention", "corrected"],
                                  ["memory", "T", "--backbone", "--ape"], ["summary", "V2-T"],
                                  ["configs", "swinv2*"], ["--version"]])
def test_analysis_commands_do_not_import_numpy(argv):
    code = ("import contextlib, io\nfrom swinref import cli\n"
            f"with contextlib.redirect_stdout(io.StringIO()): rc = cli.main({argv!r})\n"
            "assert rc == 0, rc")
    assert _modules_after(code) == []


# ---------------------------------------------------------------------------------------------------------------
# Backbone mode (issue 13).


def test_flops_backbone_example(capsys):
    data = run_json(capsys, "flops", "T", "--backbone", "--img", "800x1333", "--convention", "corrected")
    assert data["backbone"] is True and data["policy"] == "detection" and data["params"] == 27_520_698
    assert [s["stage"] for s in data["stages"]] == ["embed", 0, 1, 2, 3]
    assert all("out_norm" in s["parts"] for s in data["stages"][1:])
    code, out, err = run(capsys, "flops", "T", "--backbone", "--img", "800x1333", "--convention", "corrected")
    assert code == 0 and "backbone mode" in out and "output norm" in out and "detection" in out, err


def test_trace_and_memory_backbone(capsys):
    data = run_json(capsys, "trace", "T", "--backbone")
    names = [s["name"] for s in data["steps"]]
    assert data["backbone"] is True and data["policy"] == "detection"
    assert "outs.3" in names and "norm3" in names and "norm" not in names and "logits" not in names
    assert run_json(capsys, "trace", "T", "--backbone", "--policy", "torchvision")["policy"] == "torchvision"
    code, out, _ = run(capsys, "trace", "T", "--backbone", "--ape")
    assert code == 0 and "backbone mode" in out and "absolute position embedding" in out
    mem = run_json(capsys, "memory", "T", "--backbone", "--img", "800x1333")
    assert mem["backbone"] is True and mem["stages"][3]["held_outputs_bytes"] > 0 and mem["params"] == 27_520_698
    code, out, _ = run(capsys, "memory", "T", "--backbone")
    assert code == 0 and "held outputs" in out


def test_golden_export_out_indices(capsys, tmp_path):
    argv = ["golden", "export", "--variant", "T", "--embed-dim", "8", "--depths", "1,1", "--heads", "1,2",
            "--window", "4", "--img", "32", "--classes", "0", "--seed", "0"]
    data = run_json(capsys, *argv, "--out-indices", "1", "--out", str(tmp_path / "a"))
    assert data["backbone"] is True and data["points"][-1] == "outs.1" and "outs.0" not in data["points"]
    assert "--backbone --out-indices 1" in data["command"]
    code, _, err = run(capsys, *argv, "--out-indices", "2", "--out", str(tmp_path / "b"))
    assert code == 2 and "0..1" in err
