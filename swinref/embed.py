"""`swinref embed`: one vector per image file (the pooled features, or the logits) into .parquet, .npy or
.safetensors, resumable.

Each finished batch is committed to a partial folder beside the output (`OUT.partial/`, one shard per batch,
written under a temporary name and renamed), with a manifest of the settings that made it. A run that stops, by
an error, Ctrl-C or a killed process, leaves the shards of its finished batches; the next run with the same
settings reads them, computes only the files they do not hold, writes the output in the order of the file list
(each file once) under a temporary name, renames it into place and removes the partial folder.

Output formats (rows in the order of the file list, bad files left out):
- .parquet: columns `path` (string) and `embedding` / `logits` (fixed-size list of float); needs pyarrow
  (`pip install 'swinref[parquet]'`);
- .safetensors: the tensor `embedding` / `logits` [N, D], the paths as JSON in the metadata under `paths`;
- .npy: the array [N, D], and the paths one per line in NAME.paths.txt beside NAME.npy.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from swinref.errors import InputError
from swinref.predict import run_files
from swinref.predictor import Predictor
from swinref.write import atomic_file, check_target

__all__ = ["FORMATS", "VALUES", "EmbedReport", "embed_files", "partial_dir"]

FORMATS = (".parquet", ".npy", ".safetensors")
VALUES = ("embedding", "logits")
MANIFEST = "manifest.json"


@dataclass
class EmbedReport:
    """What one run did: rows written, rows reused from an interrupted run's shards, rows computed now, files
    skipped (path and reason)."""

    output: str
    rows: int
    width: int
    reused: int
    computed: int
    skipped: list[dict[str, str]] = field(default_factory=list)


def partial_dir(out: str | os.PathLike) -> pathlib.Path:
    """Where a run keeps its finished batches until the output is written."""
    out = pathlib.Path(out)
    return out.with_name(out.name + ".partial")


def _check_output(out: pathlib.Path, force: bool) -> None:
    """Refuse, before any work, an output that cannot or should not be written."""
    if out.suffix not in FORMATS:
        raise InputError(f"--out {str(out)!r}: write {', '.join(FORMATS)} (the suffix chooses the format)")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("writing .parquet needs pyarrow: pip install 'swinref[parquet]', or write .npy or "
                             ".safetensors") from None
    check_target(out, force=force)
    if out.suffix == ".npy":
        check_target(_listing(out), force=force)


def _listing(out: pathlib.Path) -> pathlib.Path:
    """The paths file beside a .npy output."""
    return out.with_name(out.stem + ".paths.txt")


def _manifest(predictor: Predictor, values: str) -> dict[str, Any]:
    """The settings whose change would make finished shards wrong (a different model, preprocessing or output)."""
    options = predictor.__getstate__()
    weights = options["weights"]
    stat = os.stat(weights)
    return json.loads(json.dumps({"weights": os.path.abspath(weights), "weights_mtime_ns": stat.st_mtime_ns, "weights_size": stat.st_size,
            "config": predictor.model.config.to_dict(), "dtype": predictor.model.dtype,
            "policy": predictor.model.policy, "crop": options["crop"], "values": values}))  # as read back


def _save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_file(path) as tmp:
        np.savez(tmp, **arrays)


def _read_shards(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """path -> vector, from every committed shard (temporary files of a batch that was cut short are ignored)."""
    done: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("batch-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            for name, vector in zip(z["paths"].tolist(), z["values"]):
                done[name] = vector
    return done


def _open_partial(folder: pathlib.Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The finished rows of an interrupted run with the same settings; a new partial folder otherwise."""
    path = folder / MANIFEST
    if folder.is_dir() and path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != manifest:
            changed = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise InputError(f"{str(folder)!r} holds an interrupted run made with other settings "
                             f"({', '.join(changed)} differ); run with the same settings to resume, or delete "
                             "the folder to start again")
        return _read_shards(folder)
    folder.mkdir(exist_ok=True)
    with atomic_file(path, force=True) as tmp:  # a folder without a manifest is one a run left before writing it
        pathlib.Path(tmp).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return {}


def _write_output(out: pathlib.Path, paths: list[str], matrix: np.ndarray, values: str, model: str,
                  force: bool) -> None:
    if out.suffix == ".npy":
        with atomic_file(_listing(out), force=force) as tmp:
            pathlib.Path(tmp).write_text("".join(p + "\n" for p in paths), encoding="utf-8")
        with atomic_file(out, force=force) as tmp:
            np.save(tmp, matrix)
    elif out.suffix == ".safetensors":
        from safetensors.numpy import save_file

        with atomic_file(out, force=force) as tmp:
            save_file({values: np.ascontiguousarray(matrix)}, tmp,
                      metadata={"paths": json.dumps(paths), "model": model, "values": values})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
        column = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
        table = pa.table({"path": pa.array(paths, pa.string()), values: column},
                         metadata={"model": model, "values": values})
        with atomic_file(out, force=force) as tmp:
            pq.write_table(table, tmp)


def embed_files(predictor: Predictor, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                batch_size: int = 8, values: str = "embedding", force: bool = False,
                on_batch: Callable[[int], None] | None = None) -> EmbedReport:
    """One row of `values` (the pooled embedding, or the logits) per image file into `out`, resuming an
    interrupted run (see the module's docstring). `on_batch(n)` is called after each committed batch of n files."""
    if values not in VALUES:
        raise InputError(f"values must be one of {', '.join(VALUES)}, got {values!r}")
    if values not in predictor.outputs:
        raise InputError(f"the Predictor does not compute {values!r}: build it with outputs=({values!r},)")
    out = pathlib.Path(out)
    _check_output(out, force)
    names = [os.fspath(p) for p in paths]
    folder = partial_dir(out)
    done = _open_partial(folder, _manifest(predictor, values))
    reused = sum(1 for n in set(names) if n in done)
    todo = [n for n in names if n not in done]
    skipped: list[dict[str, str]] = []
    seq = 1 + max((int(p.stem.split("-")[1]) for p in folder.glob("batch-*.npz")), default=-1)
    for chunk, result in run_files(predictor, todo, batch_size):
        ok = [j for j, e in enumerate(result["error"]) if not e]
        skipped += [{"image": chunk[j], "error": str(e)} for j, e in enumerate(result["error"]) if e]
        shard = {"paths": np.array([chunk[j] for j in ok], dtype=str),
                 "values": np.asarray(result[values])[ok]}
        _save_npz(folder / f"batch-{seq:06d}.npz", shard)
        seq += 1
        for row, j in enumerate(ok):
            done[chunk[j]] = shard["values"][row]
        if on_batch is not None:
            on_batch(len(chunk))
    rows = list(dict.fromkeys(n for n in names if n in done))
    if not rows:
        raise InputError(f"none of the {len(names)} images could be read; nothing written to {str(out)!r}")
    matrix = np.stack([done[n] for n in rows])
    _write_output(out, rows, matrix, values, predictor.model.config.name, force)
    shutil.rmtree(folder)
    return EmbedReport(output=str(out), rows=len(rows), width=int(matrix.shape[1]), reused=reused,
                       computed=len(todo) - len(skipped), skipped=skipped)
