"""Every rich table stays readable in an 80-column terminal: no line wider than 80, and every row's name (step,
layer, term, tensor) printed whole, never cut to 'layers.0.bloc…'."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from swinref import cli, get_config
from swinref.analysis import render
from swinref.analysis.flops import count_flops
from swinref.analysis.params import count_params
from swinref.analysis.summary import summary
from swinref.analysis.trace import trace


@pytest.fixture
def narrow(monkeypatch):
    console = Console(width=80, file=io.StringIO(), record=True, highlight=False, soft_wrap=False)
    monkeypatch.setattr(render, "_console", console)
    return console


def _rendered(console, *argv) -> str:
    assert cli.main(list(argv)) == 0
    text = console.export_text()
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide[:3]
    return text


def _whole(name: str, text: str) -> bool:
    return re.search(rf"(^|\s){re.escape(name)}(\s|$)", text, re.M) is not None


@pytest.mark.parametrize("model, extra", [("T", []), ("V2-B", ["--backbone"]), ("L384", ["--img", "800x1333"])])
def test_trace_names_every_step(narrow, model, extra):
    text = _rendered(narrow, "trace", model, *extra)
    cfg = get_config(model, **({"img": extra[1]} if extra[:1] == ["--img"] else {}))
    for step in trace(cfg, backbone="--backbone" in extra):
        assert _whole(step.name, text), step.name
    assert "…" not in text


def test_flops_blocks_and_items(narrow):
    text = _rendered(narrow, "flops", "T", "--blocks", "--items")
    for item in count_flops(get_config("T")).items:
        assert _whole(item.name, text), item.name
    assert _whole("layers.2.blocks.5", text) and "…" not in text


def test_params_tensors_and_memory(narrow):
    text = _rendered(narrow, "params", "V2-S", "--tensors")
    for name in count_params(get_config("V2-S")).shapes:
        assert _whole(name, text), name
    text = _rendered(narrow, "memory", "B", "--backbone", "--batch", "8")
    assert "block peak" in text and "held outputs" in text and "…" not in text


def test_summary_and_configs(narrow):
    text = _rendered(narrow, "summary", "S")
    for row in summary(get_config("S")).rows:
        assert _whole(row["layer"], text), row["layer"]
    text = _rendered(narrow, "configs")
    assert _whole("swinv2_large_patch4_window12to24_192to384_22kto1k_ft", text) and "…" not in text


def test_summary_rows_add_up():
    cfg = get_config("T")
    report = summary(cfg)
    assert sum(r["params"] for r in report.rows) == report.params == count_params(cfg).total
    assert sum(r["macs"] for r in report.rows) == report.macs == count_flops(cfg, policy="torchvision").macs
    assert [r["kind"] for r in report.rows[1:3]] == ["W-MSA", "SW-MSA"]
    assert report.rows[-1] == {"layer": "logits", "kind": "Linear", "shape": [1, 1000], "params": 769000,
                               "macs": 768000}


def test_golden_compare_report(narrow, tmp_path):
    from swinref.golden import read_case

    case = tmp_path / "case"
    assert cli.main(["golden", "export", "--variant", "T", "--embed-dim", "8", "--depths", "2,2", "--heads", "1,2",
                     "--window", "4", "--img", "32", "--classes", "10", "--out", str(case)]) == 0
    text = _rendered(narrow, "golden", "compare", str(case), str(case / "points.npz"))
    for name in read_case(case).point_names:
        assert _whole(name, text), name
