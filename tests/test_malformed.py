"""Malformed checkpoints of every container end in swinref's own error, in bounded time and memory.

Each test builds one damaged or crafted file (from the committed peer-written files where it can) and asserts the
error class, that the message names the problem (and stays short), and, where the case used to hang or exhaust
memory, a bound on time or allocation. tests/test_fuzz.py runs the mutation fuzzer over the same containers.
"""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from swinref.checkpoints import convert, export_params, load_checkpoint, read_checkpoint
from swinref.checkpoints.files import read_npz, read_safetensors
from swinref.checkpoints.pth import read_pth
from swinref.config import SwinConfig
from swinref.errors import CheckpointError, ConfigError, SwinrefError

DATA = Path(__file__).parent / "data"
TIMM_ST = DATA / "peers" / "timm_v1_pad" / "model.safetensors"
TIMM_PTH = DATA / "peers" / "timm_v1_pad" / "model.pth"
HF_DIR = DATA / "peers" / "hf_v1_pad" / "hf"
MAX_MESSAGE = 2000


def refused(path, match: str, error=CheckpointError, seconds: float = 5.0, reader=read_checkpoint) -> str:
    """Read `path`, expect `error` whose message matches and is short, within `seconds`; the message."""
    t0 = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        reader(str(path))
    assert time.perf_counter() - t0 < seconds
    message = str(info.value)
    assert len(message) < MAX_MESSAGE, message[:300]
    return message


# ---------------------------------------------------------------------------------------------------------------
# Pickle assembly (protocol 2 opcodes) and torch zip archives.


def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def i(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


PROTO2, STOP, EMPTY_DICT, EMPTY_LIST, SETITEM, APPEND, NONE = b"\x80\x02", b".", b"}", b"]", b"s", b"a", b"N"
TUPLE1, BINPERSID, REDUCE, MARK, FALSE = b"\x85", b"Q", b"R", b"(", b"\x89"


def put(n: int) -> bytes:
    return b"r" + struct.pack("<I", n)  # LONG_BINPUT


def get(n: int) -> bytes:
    return b"j" + struct.pack("<I", n)  # LONG_BINGET


def torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None,
              compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        for key, raw in (storages or {}).items():
            z.writestr(zipfile.ZipInfo(f"archive/data/{key}"), raw, compress_type=compression)
    return path


def tensor_pkl(numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    pid = tup(s("storage"), g("torch", "FloatStorage"), s("0"), s("cpu"), i(numel))
    args = MARK + pid + BINPERSID + i(0) + tup(*map(i, size)) + tup(*map(i, stride)) + FALSE + \
        g("collections", "OrderedDict") + b")" + REDUCE + b"t"
    return PROTO2 + EMPTY_DICT + s("w") + g("torch._utils", "_rebuild_tensor_v2") + args + REDUCE + SETITEM + STOP


def test_tuple_key_nested_200000_deep_is_refused_before_it_is_hashed(tmp_path):
    # CPython's unpickler hashes a dict key recursively in C: this pickle used to kill the process.
    key = NONE + TUPLE1 * 200_000
    path = torch_zip(tmp_path / "deep.pth", PROTO2 + EMPTY_DICT + key + i(1) + SETITEM + STOP)
    refused(path, "nests values more than 100 levels", reader=read_pth)


def test_billion_laughs_of_shared_lists_is_refused(tmp_path):
    # Each list holds the previous one ten times: 10**30 nodes from a few hundred bytes.
    body = EMPTY_LIST + put(0)
    for level in range(1, 31):
        body += EMPTY_LIST + put(level) + MARK + get(level - 1) * 10 + b"e"  # APPENDS
    path = torch_zip(tmp_path / "laughs.pth", PROTO2 + EMPTY_DICT + s("x") + body + SETITEM + STOP)
    refused(path, "expand to more than", reader=read_pth, seconds=2)


def test_shared_lists_filled_after_nesting_are_made_once(tmp_path):
    # The lists are nested while empty and filled afterwards, so no count at build time sees the expansion (2**40
    # paths); the walk that turns tensors into arrays makes each shared container once.
    levels = 40
    body = b"".join(EMPTY_LIST + put(n) + b"0" for n in range(levels))  # make and memoize, POP
    for n in range(levels - 1):
        body += get(n) + MARK + get(n + 1) + get(n + 1) + b"e0"  # list n holds list n+1 twice
    path = torch_zip(tmp_path / "late.pth", PROTO2 + body + EMPTY_DICT + s("x") + get(0) + SETITEM + STOP)
    t0 = time.perf_counter()
    obj, _ = read_pth(path)
    assert time.perf_counter() - t0 < 2
    assert obj["x"][0] is obj["x"][1]
    # A list that holds itself is refused.
    path = torch_zip(tmp_path / "self.pth", PROTO2 + EMPTY_LIST + put(0) + get(0) + APPEND + b"0" + EMPTY_DICT
                     + s("x") + get(0) + SETITEM + STOP)
    refused(path, "contains itself", reader=read_pth)


def test_huge_memo_index_is_refused_before_the_memo_grows(tmp_path):
    tracemalloc.start()
    path = torch_zip(tmp_path / "memo.pth", PROTO2 + EMPTY_DICT + b"r" + struct.pack("<I", 2**31) + STOP)
    refused(path, "memo entry 2147483648", reader=read_pth)
    assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    tracemalloc.stop()
    path = torch_zip(tmp_path / "get.pth", PROTO2 + get(7) + STOP)
    refused(path, "never written", reader=read_pth)


def test_length_beyond_the_file_is_refused_before_it_is_allocated(tmp_path):
    # BINBYTES8 declaring 1 GiB: CPython 3.11 allocates the declared length before reading it.
    tracemalloc.start()
    pkl = b"\x80\x04\x8e" + struct.pack("<Q", 2**30) + b"abc" + STOP
    path = torch_zip(tmp_path / "len.pth", pkl)
    refused(path, "pickle is corrupt", reader=read_pth)
    assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    tracemalloc.stop()


def test_stride_zero_view_of_2_28_elements_is_not_materialised(tmp_path):
    path = torch_zip(tmp_path / "expand.pth", tensor_pkl(1, (2**28,), (0,)), {"0": np.ones(1, "<f4").tobytes()})
    assert path.stat().st_size < 2000
    tracemalloc.start()
    refused(path, r"repeats elements \(stride 0", reader=read_pth)
    assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    tracemalloc.stop()
    # A small expanded view is still read (torch's expand() of a bias, say).
    path = torch_zip(tmp_path / "small.pth", tensor_pkl(1, (4, 3), (0, 0)), {"0": np.full(1, 2.5, "<f4").tobytes()})
    obj, _ = read_pth(path)
    np.testing.assert_array_equal(obj["w"], np.full((4, 3), 2.5, np.float32))


def test_bzip2_member_is_refused_before_it_is_inflated(tmp_path):
    path = torch_zip(tmp_path / "bz.pth", tensor_pkl(4, (4,), (1,)), {"0": np.ones(4, "<f4").tobytes()},
                     compression=zipfile.ZIP_BZIP2)
    refused(path, "compression method 12", reader=read_pth)


def _set_declared_size(blob: bytes, name: bytes, size: int) -> bytes:
    out = bytearray(blob)
    local = out.index(b"PK\x03\x04" + out[4:4])  # first local header
    for sig, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = 0
        while (at := bytes(out).find(sig, at)) >= 0:
            if bytes(out[at + name_at: at + name_at + len(name)]) == name:
                out[at + size_at: at + size_at + 4] = struct.pack("<I", size)
            at += 4
    del local
    return bytes(out)


def test_deflate_member_lying_about_its_size_is_inflated_only_up_to_it(tmp_path):
    # 64 MiB of zeros deflate to ~64 KB; the member declares the 4 bytes the pickle asks for.
    path = torch_zip(tmp_path / "lie.pth", tensor_pkl(1, (1,), (1,)), {"0": bytes(64 * 2**20)},
                     compression=zipfile.ZIP_DEFLATED)
    path.write_bytes(_set_declared_size(path.read_bytes(), b"archive/data/0", 4))
    tracemalloc.start()
    refused(path, "member 'archive/data/0'", reader=read_pth)
    assert tracemalloc.get_traced_memory()[1] < 32 * 2**20
    tracemalloc.stop()


def test_member_declaring_more_than_deflate_can_give_is_refused(tmp_path):
    path = torch_zip(tmp_path / "claim.pth", tensor_pkl(2**28, (1,), (1,)), {"0": b"\x00" * 64},
                     compression=zipfile.ZIP_DEFLATED)
    path.write_bytes(_set_declared_size(path.read_bytes(), b"archive/data/0", 2**30))
    refused(path, "sizes are inconsistent", reader=read_pth)


@pytest.mark.parametrize("edit, match", [
    ("utf8-name", "zip directory cannot be read"),
    ("method-99", "compression method 99"),
    ("encrypted", "encrypted"),
    ("bad-deflate", "is corrupt"),
])
def test_zipfile_errors_become_checkpoint_errors(tmp_path, edit, match):
    blob = bytearray(torch_zip(tmp_path / "a.pth", tensor_pkl(4, (4,), (1,)), {"0": np.ones(4, "<f4").tobytes()},
                               compression=zipfile.ZIP_DEFLATED).read_bytes())
    central = blob.index(b"PK\x01\x02")
    if edit == "utf8-name":  # the UTF-8 flag on a name that is not UTF-8
        name_at = central + 46
        blob[central + 8] |= 0x08 << 8 >> 8
        blob[central + 9] |= 0x08
        blob[name_at] = 0xFF
    elif edit == "method-99":
        for at in (0, central):
            blob[at + (8 if at == 0 else 10): at + (10 if at == 0 else 12)] = struct.pack("<H", 99)
    elif edit == "encrypted":
        blob[6] |= 1
        blob[central + 8] |= 1
    else:  # garble the deflate stream of data.pkl
        blob[40:48] = b"\xff" * 8
    path = tmp_path / "b.pth"
    path.write_bytes(bytes(blob))
    refused(path, match)


def test_legacy_file_truncated_and_with_a_view_outside_its_storage(tmp_path):
    legacy = (DATA / "pth" / "legacy.pth").read_bytes()
    for cut in (10, len(legacy) // 2, len(legacy) - 3):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(legacy[:cut])
        refused(path, "legacy|truncated|corrupt", reader=read_pth)


# ---------------------------------------------------------------------------------------------------------------
# Files that are not files.


def test_fifo_and_device_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    refused(fifo, "FIFO")
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")
    refused(zero, "a device")
    refused(zero, "a device", reader=read_safetensors)
    refused(zero, "a device", reader=read_pth)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_bytes((HF_DIR / "config.json").read_bytes())
    (hf / "model.safetensors").symlink_to("/dev/zero")
    refused(hf, "has no weights")


# ---------------------------------------------------------------------------------------------------------------
# safetensors


def _safetensors(path: Path, header: dict | str | bytes, body: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


@pytest.mark.parametrize("header, match", [
    ("[" * 200_000 + "]" * 200_000, "header does not start with"),
    ("{\"a\": " + "[" * 200_000 + "]" * 200_000 + "}", "not valid JSON|nests deeper"),
    ("{\"a\": " + "9" * 5000 + "}", "not valid JSON"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2**70]}}, "inconsistent"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "malformed"),
    ({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, "inconsistent"),
    ({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": ["0", "4"]}}, "malformed"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.5]}}, "malformed"),
    ({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, "dtype"),
    ({"w": [1, 2]}, "malformed"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlap"),
    ({"__metadata__": {"k": {"nested": 1}}}, "__metadata__"),
])
def test_malformed_safetensors_headers(tmp_path, header, match):
    path = _safetensors(tmp_path / "bad.safetensors", header, bytes(16))
    refused(path, match)


def test_damaged_safetensors_is_not_called_a_pytorch_file(tmp_path):
    good = TIMM_ST.read_bytes()
    for name, blob in {"cut": good[:6], "length": struct.pack("<Q", 2**40) + good[8:],
                       "brace": good[:8] + b"[" + good[9:]}.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        message = refused(path, "safetensors")
        assert "PyTorch" not in message


# ---------------------------------------------------------------------------------------------------------------
# npz


def _npz_members(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return path


def test_npz_member_that_is_not_npy_is_named(tmp_path):
    path = _npz_members(tmp_path / "w.npz", {"a.npy": _npy(np.ones(3, np.float32)), "notes.txt": b"hello"})
    refused(path, r"member 'notes.txt' is not a \.npy array")


def _npy(arr: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, arr, allow_pickle=False)
    return f.getvalue()


def test_npz_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    raw = _npy(np.ones(4, np.float32)).replace(b"(4,)", b"(4000000000,)")
    path = _npz_members(tmp_path / "w.npz", {"a.npy": raw})
    tracemalloc.start()
    refused(path, "header says shape")
    assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    tracemalloc.stop()


@pytest.mark.parametrize("arr", [np.array(["ab", "c"]), np.array([1 + 2j], np.complex64),
                                 np.array(["2020-01-01"], "datetime64[D]"), np.array([b"x"])])
def test_npz_of_text_dates_or_complex_is_refused_without_numpy_jargon(tmp_path, arr):
    path = tmp_path / "w.npz"
    np.savez(path, w=arr)
    message = refused(path, "numbers only")
    assert "allow_pickle" not in message


def test_npz_of_objects_does_not_quote_allow_pickle(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    message = refused(path, "numbers only")
    assert "allow_pickle" not in message


def test_truncated_npz_is_named_as_an_npz(tmp_path):
    good = tmp_path / "good.npz"
    convert(TIMM_ST, good)
    blob = good.read_bytes()
    for cut in (30, len(blob) // 2, len(blob) - 10):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(blob[:cut])
        message = refused(path, "npz")
        assert "torch zip" not in message
    text = tmp_path / "text.npz"
    text.write_text("this is not an archive\n")
    message = refused(text, "not a zip archive")
    assert "allow_pickle" not in message and "PyTorch" not in message


def test_swinref_config_in_npz_with_wrong_types(tmp_path):
    good = tmp_path / "good.npz"
    convert(TIMM_ST, good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    config = json.loads(str(arrays["__swinref_config__"]))
    for field, value, match in [("depths", "x", "depths"), ("embed_dim", 1e300, "embed_dim"),
                                ("depths", [1000000, 2, 2], "depths"), ("img_size", [[[[1]]]], "img_size"),
                                ("mlp_ratio", "four", "mlp_ratio|invalid configuration")]:
        bad = dict(arrays, __swinref_config__=np.array(json.dumps({**config, field: value})))
        path = tmp_path / f"{field}.npz"
        np.savez(path, **bad)
        refused(path, match, error=SwinrefError)
    path = tmp_path / "deep.npz"
    np.savez(path, **dict(arrays, __swinref_config__=np.array("[" * 50000 + "]" * 50000)))
    refused(path, "not valid JSON|nests deeper")


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face directories and detection


def _hf_copy(tmp_path: Path, edit) -> Path:
    target = tmp_path / "hf"
    target.mkdir()
    (target / "model.safetensors").write_bytes((HF_DIR / "model.safetensors").read_bytes())
    config = json.loads((HF_DIR / "config.json").read_text())
    text = edit(config)
    (target / "config.json").write_text(text if isinstance(text, str) else json.dumps(config))
    return target


@pytest.mark.parametrize("edit, match", [
    (lambda c: "{" * 100000, "not valid JSON"),
    (lambda c: '{"model_type": "swin", "depths": ' + "9" * 5000 + "}", "not valid JSON"),
    (lambda c: c.update(depths="x"), "depths"),
    (lambda c: c.update(image_size=[[[64]]]), "img_size"),
    (lambda c: c.update(image_size=float("inf")), "img_size|not valid JSON"),
    (lambda c: c.update(window_size=[2**40, 2**40]), "window_size"),
    (lambda c: c.update(out_features=True, architectures=["SwinBackbone"]), "out_features|output stages"),
    (lambda c: c.update(embed_dim="eight"), "embed_dim"),
    (lambda c: c.update(depths=[2, 2, 2000]), "depths"),
    (lambda c: c.update(mlp_ratio=None), "mlp_ratio|does not fit|detected"),
])
def test_hf_config_with_wrong_values(tmp_path, edit, match):
    refused(_hf_copy(tmp_path, edit), match, error=SwinrefError, reader=load_checkpoint)


def test_timm_hub_config_with_wrong_values(tmp_path):
    target = tmp_path / "hub"
    target.mkdir()
    (target / "model.safetensors").write_bytes(TIMM_ST.read_bytes())
    for args in ({"img_size": "abc"}, {"img_size": [1]}, {"window_size": {"a": 1}}, {"pretrained_window_sizes": 3}):
        (target / "config.json").write_text(json.dumps({"architecture": "swin_tiny_patch4_window7_224",
                                                        "model_args": args}))
        refused(target / "model.safetensors", "config", error=SwinrefError, reader=load_checkpoint)


def _edited_safetensors(tmp_path: Path, edit) -> Path:
    from safetensors.numpy import save_file

    sd, _, _ = read_safetensors(str(TIMM_ST))
    edit(sd)
    path = tmp_path / "edited.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
    return path


def test_a_block_numbered_one_million_is_refused_quickly(tmp_path):
    def edit(sd):
        sd["layers.1.blocks.1000000.norm2.bias"] = sd.pop("layers.1.blocks.1.norm2.bias")  # timm's names

    tracemalloc.start()
    refused(_edited_safetensors(tmp_path, edit), "stage 1 has blocks numbered up to 1000000", seconds=2,
            reader=load_checkpoint)
    assert tracemalloc.get_traced_memory()[1] < 100 * 2**20
    tracemalloc.stop()


@pytest.mark.parametrize("name, value", [
    ("patch_embed.proj.weight", np.ones((8, 3, 2), np.float32)),
    ("layers.0.blocks.0.attn.relative_position_bias_table", np.ones(9, np.float32)),
    ("layers.0.blocks.0.mlp.fc1.weight", np.float32(1)),
    ("head.fc.weight", np.ones(3, np.float32)),
    ("patch_embed.proj.weight", np.ones((0, 3, 2, 2), np.float32)),
    ("layers.0.blocks.1.attn.relative_position_bias_table", np.array(1, np.float32)),  # found by the fuzzer
])
def test_wrongly_shaped_key_tensors_are_refused_by_detection(tmp_path, name, value):
    def edit(sd):
        sd[name] = value

    refused(_edited_safetensors(tmp_path, edit), "shape|does not fit|rows", reader=load_checkpoint)


def test_a_million_character_name_gives_a_short_message(tmp_path):
    def edit(sd):
        sd["x" * 1_000_000] = sd.pop("head.fc.bias")

    refused(_edited_safetensors(tmp_path, edit), "characters")


def test_misshaped_hf_tensors_are_reported_before_translation_fails(tmp_path):
    from safetensors.numpy import save_file

    target = tmp_path / "hf"
    target.mkdir()
    (target / "config.json").write_bytes((HF_DIR / "config.json").read_bytes())
    sd, _, _ = read_safetensors(str(HF_DIR / "model.safetensors"))
    query = next(k for k in sd if k.endswith("attention.self.query.weight"))
    sd[query] = np.array(1.0, np.float32)  # the q, k, v concatenation cannot take a 0-d array
    save_file(sd, str(target / "model.safetensors"))
    refused(target, "wrong type or shape|does not fit|mis-shaped")


@pytest.mark.parametrize("dtype", ["complex64", "int64", "bool"])
def test_parameter_dtypes_are_checked_at_load(tmp_path, dtype):
    def edit(sd):
        sd["head.fc.weight"] = sd["head.fc.weight"].astype(dtype)

    path = _edited_safetensors(tmp_path, edit)
    if dtype == "complex64":
        refused(path, "holds complex64 values")
    else:  # integers and booleans are numbers: they load (and convert) like floats
        import swinref

        model = swinref.load(path)
        assert model.params["head.weight"].dtype == np.float32
        for ext in (".npz", ".safetensors"):  # what loads converts, and loads back
            convert(path, tmp_path / f"out{ext}")
            assert set(swinref.load(tmp_path / f"out{ext}").params) == set(model.params)


def test_complex_parameter_read_by_a_container_is_refused_at_load(tmp_path):
    # safetensors can hold complex64 (C64) and the reader reads it; as a Swin weight it is refused by name.
    blob = TIMM_ST.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    entry = header["head.fc.bias"]
    entry["dtype"], entry["shape"] = "C64", [entry["shape"][0] // 2]
    raw = json.dumps(header).encode()
    path = tmp_path / "complex.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + n:])
    refused(path, "'head.bias' holds complex64 values")
    sd, _, _ = read_safetensors(str(TIMM_ST))
    sd["head.fc.bias"] = sd["head.fc.bias"].astype(np.complex64)
    path = tmp_path / "c.npz"
    np.savez(path, **sd)
    refused(path, "numbers only")


def test_config_values_of_the_wrong_type_are_config_errors():
    for fields in ({"img_size": (float("inf"), 3)}, {"depths": ("x",)}, {"mlp_ratio": "x"},
                   {"layer_norm_eps": "a"}, {"pretrained_window_sizes": [None]}):
        with pytest.raises(ConfigError):
            SwinConfig(**fields)


# ---------------------------------------------------------------------------------------------------------------
# convert: what loads converts, and what convert writes loads back.


@pytest.mark.parametrize("layout", ["swinref", "official", "timm", "transformers", "torchvision", "openmmlab"])
@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_every_output_format_loads_back(tmp_path, layout, ext):
    params, cfg, _ = load_checkpoint(TIMM_PTH)
    out = tmp_path / f"out{ext}"
    convert(TIMM_PTH, out, layout=layout)
    headless = layout == "openmmlab"  # the OpenMMLab backbones have no classifier head
    back, back_cfg, report = load_checkpoint(out, None if layout == "swinref" else
                                             cfg.replace(num_classes=0) if headless else cfg)
    assert report.layout == layout
    keep = {k: v for k, v in params.items() if not (headless and k.startswith("head."))}
    assert set(keep) <= set(back)  # the OpenMMLab backbone's final norm comes back also as the last stage's norm
    for k in keep:
        np.testing.assert_array_equal(back[k], keep[k])


def test_non_finite_weights_warn_with_count_and_names(tmp_path):
    def edit(sd):
        sd["head.fc.bias"] = sd["head.fc.bias"].copy()
        sd["head.fc.bias"][:3] = [np.nan, np.inf, -np.inf]
        sd["norm.weight"] = sd["norm.weight"].copy()
        sd["norm.weight"][0] = np.nan

    path = _edited_safetensors(tmp_path, edit)
    with pytest.warns(RuntimeWarning, match=r"4 weights are NaN or infinite, in 2 parameters: .*head\.bias \(3\)"):
        _, _, report = load_checkpoint(path)
    assert any("NaN or infinite" in n for n in report.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(TIMM_ST)  # finite weights: no warning


def test_zlib_error_type_is_covered():
    # The zip reader names zlib.error among the errors it converts; keep the name importable.
    assert issubclass(zlib.error, Exception)


def test_text_npz_golden_candidate_is_named_without_numpy_jargon(tmp_path):
    from swinref.golden.compare import load_candidate
    from swinref.golden.case import GoldenError

    path = tmp_path / "candidate.npz"
    path.write_text("0.1 0.2 0.3\n")
    with pytest.raises(GoldenError, match="not an .npz archive") as info:
        load_candidate(path)
    assert "allow_pickle" not in str(info.value)


@pytest.mark.parametrize("model_type", [10**4000, "x" * 100_000, ["swin"] * 10_000])
def test_a_long_model_type_is_quoted_short(model_type):
    """Fuzz case 58265: a config.json whose model_type is a 4000-digit number was echoed whole."""
    from swinref.checkpoints.layouts.transformers import config_hints

    with pytest.raises(CheckpointError, match="model_type") as err:
        config_hints({"model_type": model_type})
    assert len(str(err.value)) < 300
