"""swinref.write: every output refused before any work when it cannot be written, existing outputs kept unless
force, no partial file after an interrupted or failed write (convert, golden export, the helpers themselves)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from swinref.errors import OutputError
from swinref.write import atomic_dir, atomic_file, check_space, check_target

from test_golden import TINY, run  # the tiny model's options and cli.main with captured output

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "tests" / "data" / "peers" / "timm_v1_pad" / "model.safetensors"


def _writable(directory: Path) -> bool:
    try:
        (directory / "probe").touch()
    except OSError:
        return False
    (directory / "probe").unlink()
    return True


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can create files in: mode 0555, and for root (whom modes do not stop) the immutable
    attribute, where the file system has one."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if _writable(d) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    try:
        if _writable(d):
            pytest.skip("no way to make a read-only directory here (root without chattr)")
        yield d
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(d)], check=True)
        d.chmod(0o755)


def _forbid(monkeypatch, target: str, attr: str):
    """Make `target.attr` fail the test if called: the refusal must come before any work."""
    import importlib

    def called(*_a, **_k):
        raise AssertionError(f"{target}.{attr} ran before the output was checked")

    monkeypatch.setattr(importlib.import_module(target), attr, called)


def test_read_only_directory_is_refused_before_any_work(read_only_dir, capsys, monkeypatch):
    _forbid(monkeypatch, "swinref.checkpoints", "load_checkpoint")
    code, out, err = run(capsys, "convert", CKPT, read_only_dir / "w.safetensors")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "not writable" in err and "choose another directory" in err
    _forbid(monkeypatch, "swinref.api", "from_params")
    code, _, err = run(capsys, "golden", "export", *TINY, "--out", read_only_dir / "case")
    assert code == 2 and "not writable" in err and "Traceback" not in err
    assert os.listdir(read_only_dir) == []


def test_existing_file_is_kept_unless_force(tmp_path, capsys, monkeypatch):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"keep me")
    with monkeypatch.context() as m:
        _forbid(m, "swinref.checkpoints", "load_checkpoint")
        code, _, err = run(capsys, "convert", CKPT, out)
    assert code == 2 and "exists" in err and "--force" in err
    assert out.read_bytes() == b"keep me"
    code, _, err = run(capsys, "convert", CKPT, out, "--force")
    assert code == 0, err
    from swinref.checkpoints import load_state_dict

    params, cfg = load_state_dict(out)
    assert cfg.embed_dim > 0 and params
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_missing_directory_and_wrong_kinds_are_refused(tmp_path):
    with pytest.raises(OutputError, match="does not exist; create it first"):
        check_target(tmp_path / "no" / "x.npz")
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="is a directory.*give a file name"):
        check_target(tmp_path / "d", force=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file.*new directory name"):
        check_target(tmp_path / "f", force=True, directory=True)
    assert check_target(tmp_path / "d", directory=True) == str(tmp_path / "d")  # empty: filled without force
    (tmp_path / "d" / "old").write_text("x")
    with pytest.raises(OutputError, match="not empty.*--force"):
        check_target(tmp_path / "d", directory=True)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_interrupted_file_write_leaves_no_partial_file(tmp_path, interruption):
    out = tmp_path / "a.npz"
    with pytest.raises(KeyboardInterrupt if interruption is KeyboardInterrupt else OutputError):
        with atomic_file(out) as tmp:
            Path(tmp).write_bytes(b"half")
            raise interruption("stopped")
    assert os.listdir(tmp_path) == []
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(out, force=True) as tmp:
            Path(tmp).write_bytes(b"half")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.npz"]


def test_file_write_keeps_extension_and_usual_mode(tmp_path):
    out = tmp_path / "a.npz"
    with atomic_file(out) as tmp:
        assert tmp.endswith(".npz") and os.path.dirname(tmp) == str(tmp_path)
        np.savez(tmp, x=np.arange(3))  # np.savez adds .npz to a name without it
    assert os.listdir(tmp_path) == ["a.npz"]
    np.testing.assert_array_equal(np.load(out)["x"], np.arange(3))
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_interrupted_directory_write_keeps_the_old_one(tmp_path):
    out = tmp_path / "case"
    with atomic_dir(out) as tmp:
        Path(tmp, "a.txt").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, force=True) as tmp:
            Path(tmp, "a.txt").write_text("second, half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["case"] and (out / "a.txt").read_text() == "first"
    with atomic_dir(out, force=True) as tmp:
        Path(tmp, "b.txt").write_text("second")
    assert os.listdir(tmp_path) == ["case"] and os.listdir(out) == ["b.txt"]


def test_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "a.npz"
    with pytest.raises(OutputError, match="appeared while"):
        with atomic_file(out) as tmp:
            Path(tmp).write_bytes(b"new")
            out.write_bytes(b"someone else's")
    assert out.read_bytes() == b"someone else's" and os.listdir(tmp_path) == ["a.npz"]


def test_check_space_refuses_more_than_the_disk_holds(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_space(tmp_path / "x", 1)
    with pytest.raises(OutputError, match="free some space"):
        check_space(tmp_path / "x", free * 2 + 1)
