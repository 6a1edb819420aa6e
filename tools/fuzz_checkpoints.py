"""Mutation fuzzer for swinref's checkpoint readers: every malformed file must end in a load or swinref's own error.

Seeds are the peer-written checkpoints in tests/data (torch zip and legacy .pth, detectron2 .pkl, .safetensors,
Hugging Face directories) and .npz files written from them by swinref's own convert (swinref's layout with its
config, and a peer's layout without). Each case is one seed and one mutation, both chosen from the case number, so
any case can be re-run by its number: bit flips, byte stores, truncations, inserted or deleted chunks, zip member
edits (a member truncated, dropped, renamed, recompressed, its declared size changed), pickle opcode edits
(arguments replaced by boundary values, opcodes dropped, duplicated or swapped), safetensors header edits, Hugging
Face config.json edits, and semantic edits of the state dict (names, shapes, dtypes, values).

    python tools/fuzz_checkpoints.py --cases 100000 --jobs 2          # the long run (nice -n 19 beside others)
    python tools/fuzz_checkpoints.py --rerun fuzz-out/failures.jsonl  # the failing cases of an earlier run

Each case runs `swinref.load` (then, when it loads, `swinref.checkpoints.convert` to .npz and .safetensors and a
load of each back) in a worker process with RLIMIT_AS = 2 GiB and a limit of 10 s of CPU time (or 200 s of wall
clock, for a worker blocked without using CPU), and ends in one outcome: loaded,
swinref-error (a SwinrefError), foreign (any other exception), memory (MemoryError), crash (the worker died) or
timeout. The summary (JSON) and one line per non-passing case (JSONL) go to --out.

tests/test_fuzz.py runs a few hundred cases in-process with the same mutators (seconds).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's swinref, whatever is installed
DATA = ROOT / "tests" / "data"

# (kind, path relative to tests/data): kind picks the mutations that understand the container.
SEEDS = [
    ("pth-zip", "peers/timm_v1_pad/model.pth"),
    ("pth-zip", "peers/tv_v1_pad/model.pth"),
    ("pth-zip", "peers/timm_v1_clamp/official.pth"),
    ("pth-zip", "peers_v2/tv_v2_pad/model.pth"),
    ("pth-zip", "peers_v2/timm_v2_pwin/official.pth"),
    ("pth-zip", "backbone/mmdet_epoch_12.pth"),
    ("pth-zip", "backbone/mmpretrain_v2_epoch_300.pth"),
    ("pth-zip", "pth/official_train.pth"),
    ("pth-zip", "pth/timm_train.pth"),
    ("pth-zip", "pth/dtypes.pth"),
    ("pth-zip", "pth/views.pth"),
    ("pth-zip", "pth/nested.pth"),
    ("pth-legacy", "pth/legacy.pth"),
    ("pickle", "backbone/mask2former_model_final.pkl"),
    ("safetensors", "peers/timm_v1_pad/model.safetensors"),
    ("safetensors", "peers_v2/timm_v2_pad/model.safetensors"),
    ("safetensors", "golden/tiny_v1/points.safetensors"),
    ("hf-dir", "peers/hf_v1_pad/hf"),
    ("hf-dir", "peers_v2/hf_v2_pad/hf"),
    ("hf-dir", "backbone/hf_backbone_ape"),
]
# .npz seeds written by swinref's convert from these peer files (into the cache directory).
NPZ_SEEDS = [
    ("npz", "peers/timm_v1_pad/model.safetensors", "swinref"),
    ("npz", "peers_v2/tv_v2_pad/model.pth", "swinref"),
    ("npz", "peers/tv_v1_pad/model.pth", "timm"),
]
# A legacy (pre-1.6) Swin checkpoint, re-saved by torch from a peer file when torch is installed.
LEGACY_SEED = ("pth-legacy", "peers/timm_v1_pad/model.pth")

OUTCOMES = ("loaded", "swinref-error", "long-message", "foreign", "memory", "crash", "timeout")
MAX_MESSAGE = 4000  # characters: a longer error message is a failure (it echoes something unbounded)
INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 255, 256, 2**15, 2**16 - 1, 2**16, 2**28, 2**31 - 1, 2**31, -2**31, 2**32,
                    2**32 - 1, 2**62, 2**63 - 1, 2**64, 10**30, -10**30]


# ---------------------------------------------------------------------------------------------------------------
# Seeds


def prepare_seeds(cache: Path, with_torch: bool = True) -> list[tuple[str, Path]]:
    """The seed list: committed files, plus .npz (and, with torch, a legacy .pth) written into `cache` once."""
    cache.mkdir(parents=True, exist_ok=True)
    seeds = [(kind, DATA / rel) for kind, rel in SEEDS]
    for kind, rel, layout in NPZ_SEEDS:
        out = cache / (rel.replace("/", "_") + f".{layout}.npz")
        if not out.exists():
            from swinref.checkpoints import convert

            convert(DATA / rel, out, layout=layout)
        seeds.append((kind, out))
    legacy = cache / "timm_v1_pad.legacy.pth"
    if not legacy.exists() and with_torch:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            sd = torch.load(DATA / LEGACY_SEED[1], map_location="cpu", weights_only=True)
            torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    if legacy.exists() and with_torch:
        seeds.append(("pth-legacy", legacy))
    return seeds


# ---------------------------------------------------------------------------------------------------------------
# Byte-level mutations (any container)


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 8, 32])):
        if out:
            pos = _biased_pos(len(out), rng)
            out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_stores(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 4])):
        if out:
            pos = _biased_pos(len(out), rng)
            value = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)])
            width = rng.choice([1, 1, 2, 4, 8])
            out[pos:pos + width] = bytes([value]) * width
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    return data[:rng.choice([0, 1, 8, 16, 64, _biased_pos(len(data), rng), rng.randrange(len(data))])]


def splice(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    pos = _biased_pos(len(data), rng)
    if rng.random() < 0.5:
        return data[:pos] + data[pos + rng.choice([1, 2, 4, 16, 256]):]
    chunk = data[rng.randrange(len(data)):][:rng.choice([1, 4, 16, 256])] if rng.random() < 0.5 else \
        bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 16])))
    return data[:pos] + chunk + data[pos:]


def _biased_pos(n: int, rng: random.Random) -> int:
    # Headers and the pickle live near the start and the end (zip directory) of a file: hit them often.
    r = rng.random()
    if r < 0.35:
        return rng.randrange(min(n, 512))
    if r < 0.55:
        return max(0, n - 1 - rng.randrange(min(n, 512)))
    return rng.randrange(n)


BYTE_MUTATIONS = [bit_flips, byte_stores, truncate, splice]


# ---------------------------------------------------------------------------------------------------------------
# Pickle opcode edits


def _encode_int(n: int) -> bytes:
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _encode_str(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def pickle_edit(pkl: bytes, rng: random.Random) -> bytes:
    """Replace, drop, duplicate or swap opcodes of a pickle, or give its memo / length arguments boundary values."""
    import pickletools

    try:
        ops = [(op, arg, pos) for op, arg, pos in pickletools.genops(pkl)]
    except Exception:
        return bit_flips(pkl, rng)
    if not ops:
        return pkl
    bounds = [pos for _, _, pos in ops] + [len(pkl)]
    k = rng.randrange(len(ops))
    op, arg, pos = ops[k]
    end = bounds[k + 1]
    choice = rng.random()
    if isinstance(arg, int) and not isinstance(arg, bool) and choice < 0.6:
        value = rng.choice(INTERESTING_INTS + [arg + 1, arg - 1, arg * 2, -arg])
        if op.name in ("BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET"):
            code = {"BINPUT": b"r", "LONG_BINPUT": b"r", "BINGET": b"j", "LONG_BINGET": b"j"}[op.name]
            new = code + struct.pack("<I", value % 2**32)
        elif op.name in ("BINUNICODE", "BINBYTES", "BINSTRING"):
            return pkl  # arguments are texts, handled below
        else:
            new = _encode_int(value)
        return pkl[:pos] + new + pkl[end:]
    if isinstance(arg, str) and choice < 0.6:
        text = rng.choice([
            "", arg + "x", arg[::-1], "layers.1.blocks.1000000.norm2.bias", "x" * rng.choice([300, 100000]),
            "storage", "module", arg.replace(".", "..", 1), "\udcff",
        ])
        return pkl[:pos] + _encode_str(text) + pkl[end:]
    if choice < 0.75:
        return pkl[:pos] + pkl[end:]  # drop the opcode
    if choice < 0.85:
        return pkl[:end] + pkl[pos:end] * rng.choice([1, 2, 100]) + pkl[end:]  # repeat it
    if choice < 0.95 and len(ops) > 1:
        j = rng.randrange(len(ops))
        a, b = sorted((k, j))
        if a == b:
            return pkl
        sa, ea, sb, eb = bounds[a], bounds[a + 1], bounds[b], bounds[b + 1]
        return pkl[:sa] + pkl[sb:eb] + pkl[ea:sb] + pkl[sa:ea] + pkl[eb:]
    opcode = rng.choice([b"(", b"t", b"l", b"}", b"s", b"R", b"b", b"0", b"2", b"\x94", b"e", b"u", b"\x85"])
    return pkl[:pos] + opcode + pkl[pos:]


# ---------------------------------------------------------------------------------------------------------------
# Zip member edits (torch zip archives and .npz)


def zip_edit(data: bytes, rng: random.Random) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [(info, z.read(info.filename)) for info in z.infolist()]
    except Exception:
        return bit_flips(data, rng)
    if not members:
        return data
    k = rng.randrange(len(members))
    info, raw = members[k]
    action = rng.choice(["pickle", "pickle", "pickle", "truncate", "drop", "rename", "compress", "bytes", "extra",
                         "lie"])
    compress = {i: zipfile.ZIP_STORED for i in range(len(members))}
    if action == "pickle":
        pkl = [i for i, (inf, _) in enumerate(members) if inf.filename.endswith(".pkl")]
        if pkl:
            k = rng.choice(pkl)
            members[k] = (members[k][0], pickle_edit(members[k][1], rng))
        else:  # .npz: edit a .npy header instead
            members[k] = (info, _npy_header_edit(raw, rng))
    elif action == "truncate":
        members[k] = (info, raw[:rng.randrange(len(raw) + 1)])
    elif action == "drop":
        del members[k]
    elif action == "rename":
        new = rng.choice([info.filename + "x", info.filename.replace(".npy", ".txt"), "archive/data/999",
                          "other/data.pkl", "\u00e9/data.pkl", info.filename.upper()])
        members[k] = (zipfile.ZipInfo(new), raw)
    elif action == "compress":
        compress[k] = rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
    elif action == "bytes":
        members[k] = (info, rng.choice(BYTE_MUTATIONS)(raw, rng))
    elif action == "extra":
        members.append((zipfile.ZipInfo(rng.choice(["archive/data/extra", "extra.npy", "x.npy", "archive/code/x"])),
                        rng.choice([b"", b"\x00" * 16, raw[:64]])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i, (inf, raw) in enumerate(members):
            zi = zipfile.ZipInfo(inf.filename, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = compress.get(i, zipfile.ZIP_STORED)
            z.writestr(zi, raw)
    blob = out.getvalue()
    if action == "lie":
        blob = _lie_about_size(blob, rng)
    return blob


def _lie_about_size(blob: bytes, rng: random.Random) -> bytes:
    """Change a member's declared uncompressed size in the local header and the central directory."""
    out = bytearray(blob)
    value = rng.choice([0, 1, 2**31 - 1, 2**32 - 1, rng.randrange(2**20)])
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        starts = [i for i in range(len(out) - 4) if out[i:i + 4] == sig]
        if starts:
            at = rng.choice(starts) + offset
            out[at:at + 4] = struct.pack("<I", value)
    return bytes(out)


def _npy_header_edit(raw: bytes, rng: random.Random) -> bytes:
    if not raw.startswith(b"\x93NUMPY") or len(raw) < 10:
        return bit_flips(raw, rng)
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + hlen].decode("latin1")
    edits = [
        ("'shape': (", "'shape': (1000000000, "), ("'shape': (", "'shape': (-1, "), ("'<f4'", "'|O'"),
        ("'<f4'", "'<c8'"), ("'<f4'", "'<M8[s]'"), ("'<f4'", "'<U4'"), ("False", "True"), ("'<f4'", "'>f4'"),
        ("'shape': (", "'shape': ((((((((((((((((((((("), ("'descr'", "'nope'"), ("'<f4'", "[('a', '<f4')]"),
    ]
    old, new = rng.choice(edits)
    header = header.replace(old, new, 1)
    body = header.encode("latin1")
    return raw[:8] + struct.pack("<H", len(body)) + body + raw[10 + hlen:]


# ---------------------------------------------------------------------------------------------------------------
# safetensors header and HF config edits


def _wild_value(rng: random.Random, like=None):
    choices = [
        None, True, -1, 0, 2**70, 1e308, -0.5, "x", "", [], {}, [[[[1]]]], [1, "a"], [-1, 2], [2**40, 2**40],
        {"a": 1}, "F32", [0] * 100, 10**4000 if rng.random() < 0.05 else 3,
    ]
    if isinstance(like, list) and like:
        choices += [like[:-1], like + like, [v * 1000 for v in like if isinstance(v, int)], like[::-1]]
    if isinstance(like, int) and not isinstance(like, bool):
        choices += [like + 1, like * 1000000, -like, str(like), float(like)]
    return rng.choice(choices)


def _deep_json(rng: random.Random) -> str:
    depth = rng.choice([100, 5000, 200000])
    return "[" * depth + "]" * depth


def json_edit(obj, rng: random.Random):
    """Change, delete or add one (possibly nested) entry of a JSON object."""
    if not isinstance(obj, dict) or not obj:
        return _wild_value(rng)
    key = rng.choice(list(obj))
    action = rng.random()
    if action < 0.55:
        value = obj[key]
        if isinstance(value, dict) and value and rng.random() < 0.7:
            obj[key] = json_edit(dict(value), rng)
        elif isinstance(value, list) and value and rng.random() < 0.4:
            value = list(value)
            value[rng.randrange(len(value))] = _wild_value(rng, value[0])
            obj[key] = value
        else:
            obj[key] = _wild_value(rng, value)
    elif action < 0.75:
        del obj[key]
    elif action < 0.9:
        obj[rng.choice(["x" * 100000, "layers.1.blocks.1000000.norm2.bias", "__metadata__", "", key + "."])] = \
            obj[key]
    else:
        obj[key] = {"nested": obj[key]}
    return obj


def safetensors_edit(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 8:
        return data
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except Exception:
        return bit_flips(data, rng)
    body = data[8 + n:]
    r = rng.random()
    if r < 0.1:
        text = rng.choice([_deep_json(rng), "{" + "\"a\":{" * 5000 + "}" * 5001, "[]", "null", "{\"a\": 1e999}",
                           "{\"a\": " + "9" * 5000 + "}", "\u00ff"])
        blob = text.encode("utf-8")
        return len(blob).to_bytes(8, "little") + blob + body
    if r < 0.2:
        return rng.choice(INTERESTING_INTS[:18]).to_bytes(8, "little", signed=True) + data[8:]
    names = [k for k in header if k != "__metadata__"]
    if names and r < 0.8:
        name = rng.choice(names)
        entry = dict(header[name])
        field = rng.choice(["dtype", "shape", "data_offsets"])
        if field == "dtype":
            entry["dtype"] = rng.choice(["C64", "F8_E4M3", "BOOL", "U64", "I8", "F64", "BF16", "F16", "X", 3])
        elif rng.random() < 0.5:
            entry[field] = _wild_value(rng, entry[field])
        else:
            value = list(entry[field])
            if value:
                value[rng.randrange(len(value))] = rng.choice(INTERESTING_INTS)
            entry[field] = value
        header[name] = entry
    else:
        header = json_edit(header, rng)
    blob = json.dumps(header).encode("utf-8")
    return len(blob).to_bytes(8, "little") + blob + body


def config_edit(text: bytes, rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
        return rng.choice([_deep_json(rng).encode(), b"{", b"", b"\xff\xfe", b"{\"depths\": " + b"9" * 5000 + b"}",
                           b"[1, 2]", b"{\"image_size\": 1e999}"])
    try:
        config = json.loads(text)
    except Exception:
        return bit_flips(text, rng)
    if isinstance(config, dict):
        for _ in range(rng.choice([1, 1, 2, 3])):
            config = json_edit(config, rng)
    return json.dumps(config, allow_nan=True).encode()


# ---------------------------------------------------------------------------------------------------------------
# Semantic edits of the state dict: read with swinref's own container readers, edited, written as .safetensors or
# .npz (the containers swinref writes itself).


def semantic_edit(path: Path, rng: random.Random, out_dir: Path) -> Path:
    import numpy as np

    from swinref.checkpoints import _read_file

    sd, _facts = _read_file(str(path))
    sd = dict(sd)
    names = sorted(sd)
    name = rng.choice(names)
    action = rng.choice(["rename", "reshape", "dtype", "dtype", "drop", "values", "add", "scalar"])
    if action == "rename":
        new = rng.choice([
            "layers.1.blocks.1000000.norm2.bias", "layers.1000000.blocks.0.norm1.weight", name + "x",
            name.replace("0", "9", 1), "x" * 1000000, name.replace(".", "", 1), "module." + name, "",
            "layers.-1.blocks.0.norm1.weight", "layers.01.blocks.0.norm1.weight",
        ])
        sd[new] = sd.pop(name)
    elif action == "reshape":
        v = sd[name]
        sd[name] = rng.choice([v.reshape(-1), v.reshape(1, *v.shape), v[..., :0] if v.ndim else v.reshape(1)[:0],
                               np.zeros((0,), v.dtype), v.T.copy() if v.ndim > 1 else np.stack([v, v])])
    elif action == "dtype":
        dt = rng.choice(["complex64", "complex128", "int64", "int8", "uint64", "bool", "float16", "float64",
                         "datetime64[s]", "<U3", "S2"])
        v = sd[name]
        try:
            sd[name] = v.astype(dt)
        except (TypeError, ValueError):
            sd[name] = np.zeros(v.shape, dt)
    elif action == "drop":
        del sd[name]
    elif action == "values":
        v = sd[name].astype(np.float32).copy()
        if v.size:
            v.reshape(-1)[rng.randrange(v.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e38])
        sd[name] = v
    elif action == "add":
        sd[rng.choice(["head.weight", "norm0.weight", "absolute_pos_embed", "extra"])] = np.ones(
            rng.choice([(3,), (1, 4, 2, 2), (0,), (2, 2)]), np.float32)
    else:
        sd[name] = np.float32(rng.random())
    kind = rng.choice(["npz", "safetensors"]) if not any(sd[k].dtype.kind in "cMUS" for k in sd) else "npz"
    out = out_dir / ("semantic." + kind)
    if kind == "npz":
        np.savez(out, **{k: np.asarray(v) for k, v in sd.items()} if "" not in sd else
                 {k or "_": np.asarray(v) for k, v in sd.items()})
    else:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(out))
    return out


# ---------------------------------------------------------------------------------------------------------------
# One case


def make_case(index: int, seeds: list[tuple[str, Path]], out_dir: Path) -> tuple[Path, str]:
    """Write case `index` into out_dir (a fresh directory); returns the path to load and the mutation's name."""
    rng = random.Random(index * 1_000_003 + 17)
    kind, seed = seeds[index % len(seeds)]
    r = rng.random()
    if kind != "hf-dir" and r < 0.12:
        return semantic_edit(seed, rng, out_dir), "semantic"
    if kind == "hf-dir":
        target = out_dir / "model"
        shutil.copytree(seed, target)
        if r < 0.45:
            cfg = target / "config.json"
            cfg.write_bytes(config_edit(cfg.read_bytes(), rng))
            return target, "hf-config"
        weights = target / "model.safetensors"
        if r < 0.6:
            edited = semantic_edit(weights, rng, out_dir)
            if edited.suffix != ".safetensors":
                return edited, "semantic"
            os.replace(edited, weights)
            return target, "semantic"
        mutate = rng.choice([safetensors_edit, safetensors_edit] + BYTE_MUTATIONS)
        weights.write_bytes(mutate(weights.read_bytes(), rng))
        return target, mutate.__name__
    data = seed.read_bytes()
    suffix = seed.suffix
    if kind in ("pth-zip", "npz") and r < 0.55:
        mutate = zip_edit
    elif kind in ("pth-legacy", "pickle") and r < 0.55:
        mutate = pickle_edit
    elif kind == "safetensors" and r < 0.55:
        mutate = safetensors_edit
    else:
        mutate = rng.choice(BYTE_MUTATIONS)
    out = out_dir / ("case" + suffix)
    out.write_bytes(mutate(data, rng))
    return out, mutate.__name__


def run_case(path: Path, scratch: Path) -> None:
    """What a user does with a file: load it; when it loads, convert it to both formats and load each back."""
    import warnings

    import swinref
    from swinref.checkpoints import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN weights warn; the outcome is what counts here
        model = swinref.load(path)
        for ext in (".npz", ".safetensors"):
            out = scratch / ("converted" + ext)
            convert(path, out)
            back = swinref.load(out)
            if set(back.params) != set(model.params):
                raise AssertionError(f"{out.name} does not load back to the same parameters")


def classify(exc: BaseException) -> str:
    from swinref.errors import SwinrefError

    if isinstance(exc, SwinrefError):
        return "swinref-error"
    if isinstance(exc, MemoryError):
        return "memory"
    return "foreign"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "swinref" in f.filename] or frames
    f = inside[-1] if inside else None
    return f"{Path(f.filename).name}:{f.lineno} {f.name}" if f else "?"


def execute(index: int, seeds: list[tuple[str, Path]], work: Path) -> dict:
    """Make and run one case in this process; a dict describing its outcome."""
    case_dir = Path(tempfile.mkdtemp(prefix=f"case{index}-", dir=work))
    try:
        try:
            path, mutation = make_case(index, seeds, case_dir)
        except Exception as exc:  # a mutation that could not be written is no case
            return {"case": index, "outcome": "skipped", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        result = {"case": index, "seed": str(seeds[index % len(seeds)][1].relative_to(ROOT))
                  if seeds[index % len(seeds)][1].is_relative_to(ROOT) else str(seeds[index % len(seeds)][1]),
                  "mutation": mutation}
        try:
            run_case(path, case_dir)
            result["outcome"] = "loaded"
        except BaseException as exc:  # noqa: BLE001 - classifying every outcome is the point
            if isinstance(exc, KeyboardInterrupt):
                raise
            result["outcome"] = classify(exc)
            message = str(exc)
            result["error"] = f"{type(exc).__name__}: {message[:300]}"
            result["message_chars"] = len(message)
            if result["outcome"] == "swinref-error" and len(message) > MAX_MESSAGE:
                result["outcome"] = "long-message"
            if result["outcome"] != "swinref-error":
                result["where"] = _where(exc)
        return result
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# The pool: worker processes with limits, one case at a time, killed on a timeout.


def worker_main(cache: Path, work: Path, memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    seeds = prepare_seeds(cache)
    import swinref  # noqa: F401 - imported before the first case so that cases are timed alone
    import swinref.checkpoints  # noqa: F401

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        index = int(line)
        result = execute(index, seeds, work)
        out.write(json.dumps(result) + "\n")
        out.flush()


class Worker:
    def __init__(self, args):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--cache", str(args.cache), "--work",
               str(args.work), "--memory", str(args.memory)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=ROOT)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"a worker did not start: {line!r}")
        self.case: int | None = None
        self.started = 0.0
        self.cpu_at_start = 0.0

    def cpu(self) -> float:
        """CPU seconds (user + system) the worker has used: the time limit is on CPU, not on the wall clock, so that
        a run at nice 19 on a busy machine does not count waiting for a core as a hang."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def over_time(self, limit: float) -> bool:
        # CPU time over the limit, or a wall clock 20 times over it (a worker blocked on I/O uses no CPU).
        return (self.cpu() - self.cpu_at_start > limit or time.monotonic() - self.started > 20 * limit)

    def send(self, index: int) -> None:
        self.case, self.started, self.cpu_at_start = index, time.monotonic(), self.cpu()
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run_pool(cases: list[int], args) -> list[dict]:
    results: list[dict] = []
    pending = list(reversed(cases))
    workers = [Worker(args) for _ in range(args.jobs)]
    idle = list(workers)
    busy: dict[int, Worker] = {}
    t0 = time.monotonic()
    last_report = t0
    while pending or busy:
        while idle and pending:
            w = idle.pop()
            w.send(pending.pop())
            busy[w.proc.stdout.fileno()] = w
        ready, _, _ = select.select(list(busy), [], [], 0.5)
        for fd in ready:
            w = busy.pop(fd)
            line = w.proc.stdout.readline()
            if line:
                results.append(json.loads(line))
                idle.append(w)
                continue
            code = w.proc.wait()
            results.append({"case": w.case, "outcome": "crash", "error": f"worker exit code {code}"})
            idle.append(Worker(args))
        now = time.monotonic()
        for fd, w in list(busy.items()):
            if w.over_time(args.timeout):
                busy.pop(fd)
                w.kill()
                results.append({"case": w.case, "outcome": "timeout", "error": f"over {args.timeout} s CPU",
                                "wall": round(now - w.started, 1)})
                idle.append(Worker(args))
        if now - last_report > 60:
            last_report = now
            print(f"{len(results)}/{len(cases)} cases, {now - t0:.0f} s: {summarise(results)['outcomes']}",
                  flush=True)
            write_results(results, args, now - t0, partial=True)
    for w in idle:
        w.proc.stdin.close()
        w.proc.wait()
    return results


def summarise(results: list[dict]) -> dict:
    counts = {k: 0 for k in OUTCOMES}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        if r["outcome"] not in ("loaded", "swinref-error", "skipped"):
            key = f"{r['outcome']}: {r.get('error', '').split(':')[0]} at {r.get('where', '?')}"
            by_kind[key] = by_kind.get(key, 0) + 1
    return {"cases": len(results), "outcomes": counts, "failures": dict(sorted(by_kind.items(),
                                                                           key=lambda kv: -kv[1]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=1000, help="number of cases (case numbers from --start)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--rerun", type=Path, help="a JSONL of earlier results: run their case numbers again")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--memory", type=int, default=2 * 1024**3, help="RLIMIT_AS of each worker, bytes")
    p.add_argument("--out", type=Path, default=ROOT / "fuzz-out")
    p.add_argument("--cache", type=Path, default=None, help="where the .npz / legacy seeds are written once")
    p.add_argument("--work", type=Path, default=None, help="scratch directory for the cases")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.cache = args.cache or args.out / "seeds"
    args.work = args.work or Path(tempfile.gettempdir()) / f"swinref-fuzz-{os.getpid()}"
    if args.worker:
        worker_main(args.cache, args.work, args.memory)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    prepare_seeds(args.cache)  # once, before the workers (which only read them)
    if args.rerun:
        cases = sorted({json.loads(line)["case"] for line in args.rerun.read_text().splitlines() if line.strip()})
    else:
        cases = list(range(args.start, args.start + args.cases))
    t0 = time.monotonic()
    try:
        results = run_pool(cases, args)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    summary, bad = write_results(results, args, time.monotonic() - t0, partial=False)
    print(json.dumps(summary, indent=1))
    return 1 if bad else 0


def write_results(results: list[dict], args, seconds: float, partial: bool) -> tuple[dict, list[dict]]:
    """summary.json and failures.jsonl in --out (rewritten every minute during a run, marked partial)."""
    summary = summarise(results)
    summary["seconds"] = round(seconds)
    summary["partial"] = partial
    summary["command"] = " ".join(["python", "tools/fuzz_checkpoints.py"] + args.argv)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    bad = [r for r in results if r["outcome"] not in ("loaded", "swinref-error", "skipped")]
    with open(args.out / "failures.jsonl", "w") as f:
        for r in sorted(bad, key=lambda r: r["case"]):
            f.write(json.dumps(r) + "\n")
    return summary, bad


if __name__ == "__main__":
    sys.exit(main())
