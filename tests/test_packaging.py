"""Packaging: the distribution claims only the name `swinref`; `python -m swinref` is the command line.

The code of the analysis package and of the command line lives in the top-level analysis/ and cli.py;
swinref/analysis and swinref/cli.py are relative symlinks to them, so they are `swinref.analysis` and `swinref.cli`
both in the source tree and in the wheel (which holds copies). Nothing may import the global names `analysis` or
`cli`: a user's own analysis.py or cli.py would shadow them.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import swinref
from swinref import cli

ROOT = Path(__file__).resolve().parents[1]
# The directory holding the swinref that these tests import (the source tree, or site-packages when installed).
SWINREF_PARENT = Path(swinref.__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SWINREF_PARENT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _main_output(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 0
    return capsys.readouterr().out


def test_python_m_swinref_is_the_cli(capsys):
    argv = ["trace", "--img", "224", "--variant", "T"]
    proc = subprocess.run([sys.executable, "-m", "swinref", *argv], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _main_output(capsys, argv)


def test_python_m_swinref_exit_code():
    proc = subprocess.run([sys.executable, "-m", "swinref", "flops", "--img", "0"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "swinref: error:" in proc.stderr


def test_own_analysis_and_cli_modules_do_not_shadow_swinref(tmp_path, capsys):
    for name in ("analysis", "cli"):
        (tmp_path / f"{name}.py").write_text(f"raise RuntimeError('the user\\'s own {name}.py was imported')\n")
    # `python -m` puts the working directory first on sys.path, before the swinref under test.
    proc = subprocess.run([sys.executable, "-m", "swinref", "flops", "T"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _main_output(capsys, ["flops", "T"])


def test_no_global_analysis_or_cli_module_in_this_process():
    # Two names for one file would mean two copies of each module (and of their caches).
    assert "analysis" not in sys.modules and "cli" not in sys.modules
    assert Path(cli.__file__).name == "cli.py" and cli.__name__ == "swinref.cli"


IMPORT_OF_GLOBAL_NAME = re.compile(r"^\s*(?:import|from)\s+(?:analysis|cli)\b", re.MULTILINE)


def test_sources_import_swinref_analysis_and_swinref_cli_only():
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not a source tree")
    files = [ROOT / "cli.py", *(p for d in ("swinref", "analysis", "tests", "tools", "benchmarks", "examples")
                                 for p in (ROOT / d).rglob("*.py"))]
    offenders = [str(p.relative_to(ROOT)) for p in files if IMPORT_OF_GLOBAL_NAME.search(p.read_text())]
    assert offenders == []


def test_package_links_point_at_the_top_level_code():
    if not (ROOT / "cli.py").exists():
        pytest.skip("not a source tree")
    assert (ROOT / "swinref" / "cli.py").resolve() == (ROOT / "cli.py").resolve()
    assert (ROOT / "swinref" / "analysis").resolve() == (ROOT / "analysis").resolve()


@pytest.mark.slow
def test_wheel_holds_only_the_swinref_package(tmp_path):
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed: cannot build the wheel offline (--no-build-isolation)")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build requirement (>=68)")
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not a source tree")
    # Build from a copy: a stale build/ directory in the tree would leak old files into the wheel.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("swinref", "analysis"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("swinref-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        top = {n.split("/")[0] for n in names}
        dist_info = next(t for t in top if t.endswith(".dist-info"))
        assert top == {"swinref", dist_info}
        assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["swinref"]
        assert re.search(r"^swinref\s*=\s*swinref\.cli:main$", zf.read(f"{dist_info}/entry_points.txt").decode(),
                         re.MULTILINE)
        # The symlinked code is in the wheel as regular files with the same contents.
        assert zf.read("swinref/cli.py") == (src / "cli.py").read_bytes()
        for p in (src / "analysis").glob("*.py"):
            assert zf.read(f"swinref/analysis/{p.name}") == p.read_bytes()
        assert "swinref/__main__.py" in names
        assert not any(stat.S_ISLNK(i.external_attr >> 16) for i in infos)


def test_every_subpackage_is_in_the_distribution():
    """A package directory missing from [tool.setuptools] packages is left out of `pip install .`, and importing
    it fails only outside the source tree."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "swinref").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
