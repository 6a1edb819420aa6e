"""The torch-free .pth reader: real torch-written files (tests/data/pth, made by tools/make_pth_fixtures.py),
hostile pickles that must be refused before they run, and damaged files that must give a clear CheckpointError."""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from swinref.checkpoints import read_checkpoint
from swinref.checkpoints.pth import OpaqueDict, OpaqueObject, read_pth
from swinref.errors import CheckpointError, UnsafePickleError

DATA = Path(__file__).parent / "data" / "pth"
EXPECTED = np.load(DATA / "expected.npz")
META = json.loads((DATA / "expected.json").read_text())
FILES = sorted(n for n in META if not n.startswith("_"))


def flatten(obj, prefix: str = "", out: dict | None = None) -> dict[str, np.ndarray]:
    """Same dotted paths as the fixture script's _flatten."""
    out = {} if out is None else out
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, f"{prefix}[{i}]", out)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Real torch files.


@pytest.mark.parametrize("name", FILES)
def test_torch_written_file_reads_exactly(name):
    obj, info = read_pth(DATA / name)
    got = flatten(obj)
    assert sorted(got) == META[name]["tensors"]
    for path, arr in got.items():
        want = EXPECTED[f"{name}:{path}"]
        assert arr.dtype == want.dtype, path
        assert arr.shape == want.shape, path
        np.testing.assert_array_equal(arr, want, err_msg=path)
        assert arr.flags.c_contiguous and arr.flags.writeable, path


def test_bfloat16_is_widened_and_reported():
    obj, info = read_pth(DATA / "dtypes.pth")
    assert obj["bf16"].dtype == np.float32
    assert info["widened"] == ["bf16"]
    # bfloat16 keeps 8 mantissa bits: the widened values are the float32 ones rounded, not equal to them.
    assert not np.array_equal(obj["bf16"], obj["f32"])
    np.testing.assert_allclose(obj["bf16"], obj["f32"], rtol=2**-8)


def test_views_are_independent_copies():
    obj, _ = read_pth(DATA / "views.pth")
    obj["base"][0, 0] = 1234.0
    assert obj["transposed"][0, 0] != 1234.0


def test_containers_and_formats():
    assert read_pth(DATA / "legacy.pth")[1]["container"] == "torch-legacy"
    assert read_pth(DATA / "dtypes.pth")[1]["container"] == "torch-zip"
    with zipfile.ZipFile(DATA / "archive_prefix.pth") as z:
        assert "archive/data.pkl" in z.namelist()  # the prefix is not the file's stem
    obj, _ = read_pth(DATA / "nested.pth")
    assert obj["numbers"] == META["_values"]["nested.pth"]["numbers"]


def test_metadata_objects_become_inert_data():
    obj, _ = read_pth(DATA / "timm_train.pth")
    args = obj["args"]
    assert isinstance(args, OpaqueObject) and args.global_name == "argparse.Namespace"
    assert args.state == META["_values"]["timm_train.pth"]["args"]
    assert obj["metric"] == META["_values"]["timm_train.pth"]["metric"] and isinstance(obj["metric"], float)
    assert obj["epoch"] == 3
    obj, _ = read_pth(DATA / "official_train.pth")
    cfg = obj["config"]
    assert isinstance(cfg, OpaqueDict) and cfg.global_name == "yacs.config.CfgNode"
    assert json.loads(json.dumps(cfg)) == META["_values"]["official_train.pth"]["config"]
    assert "yacs" not in sys.modules  # the real class was never imported


# ---------------------------------------------------------------------------------------------------------------
# A tiny pickle assembler: hostile and damaged pickles are written opcode by opcode, so each test shows exactly
# which path it attacks.


def g(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def i(n: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", n)


def tup(*items: bytes) -> bytes:  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


MARK, REDUCE, BUILD, STOP, BINPERSID = b"(", b"R", b"b", b".", b"Q"
EMPTY_DICT, SETITEM, NONE, FALSE = b"}", b"s", b"N", b"\x89"
PROTO2 = b"\x80\x02"


def torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None, byteorder: bytes | None = b"little",
              prefix: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            z.writestr(f"{prefix}/data/{key}", raw)
        z.writestr(f"{prefix}/version", b"3\n")
    return path


def tensor_pkl(numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0,
               storage_type: bytes | None = None) -> bytes:
    """{'w': _rebuild_tensor_v2(<storage '0' of numel floats>, offset, size, stride, False, OrderedDict())}"""
    pid = tup(s("storage"), storage_type or g("torch", "FloatStorage"), s("0"), s("cpu"), i(numel))
    args = MARK + pid + BINPERSID + i(offset) + tup(*map(i, size)) + tup(*map(i, stride)) + FALSE + \
        g("collections", "OrderedDict") + b")" + REDUCE + b"t"
    return PROTO2 + EMPTY_DICT + s("w") + g("torch._utils", "_rebuild_tensor_v2") + args + REDUCE + SETITEM + STOP


def test_assembler_makes_a_readable_file(tmp_path):
    # The assembler itself is right: a well-formed record reads back (so refusals below are not format errors).
    data = np.arange(6, dtype="<f4")
    path = torch_zip(tmp_path / "ok.pth", tensor_pkl(6, (2, 3), (3, 1)), {"0": data.tobytes()})
    obj, _ = read_pth(path)
    np.testing.assert_array_equal(obj["w"], data.reshape(2, 3))


# Hostile pickles: each would create `target` if it ran.
def _hostile(target: Path) -> dict[str, tuple[bytes, str]]:
    t = str(target)
    return {
        "reduce os.system": (PROTO2 + g("os", "system") + tup(s(f"touch {t}")) + REDUCE + STOP, "os.system"),
        "reduce posix.system": (PROTO2 + g("posix", "system") + tup(s(f"touch {t}")) + REDUCE + STOP, "posix.system"),
        "builtins.eval": (PROTO2 + g("builtins", "eval") + tup(s(f"open({t!r}, 'w')")) + REDUCE + STOP,
                          "builtins.eval"),
        "builtins.open for writing": (PROTO2 + g("builtins", "open") + tup(s(t), s("w")) + REDUCE + STOP,
                                      "builtins.open"),
        "__builtin__.exec (protocol-2 spelling)": (
            PROTO2 + g("__builtin__", "exec") + tup(s(f"open({t!r}, 'w')")) + REDUCE + STOP, "__builtin__.exec"),
        # BUILD: an object whose __setstate__ would run; its class is refused before BUILD is reached.
        "BUILD / __setstate__": (
            PROTO2 + g("subprocess", "Popen") + tup(tup(s("touch"), s(t))) + REDUCE + EMPTY_DICT + BUILD + STOP,
            "subprocess.Popen"),
        # INST (protocol 0) and OBJ (protocol 1) build objects without REDUCE.
        "INST": (b"(S'touch " + t.encode() + b"'\nios\nsystem\n.", "os.system"),
        "OBJ": (MARK + g("os", "system") + s(f"touch {t}") + b"o" + STOP, "os.system"),
        # STACK_GLOBAL (protocol 4) names the global with two strings on the stack.
        "STACK_GLOBAL": (b"\x80\x04" + s("os") + s("system") + b"\x93" + tup(s(f"touch {t}")) + REDUCE + STOP,
                         "os.system"),
        # The persistent-id path: a storage "type" that is really a callable.
        "persistent id": (
            PROTO2 + EMPTY_DICT + s("w") + tup(s("storage"), g("os", "system"), s("0"), s("cpu"), i(1)) + BINPERSID
            + SETITEM + STOP, "os.system"),
        # A tensor rebuilt through a refused function.
        "rebuild via getattr": (
            PROTO2 + g("builtins", "getattr") + tup(g("os", "system"), s("__call__")) + REDUCE + STOP,
            "builtins.getattr"),
    }


@pytest.mark.parametrize("case", list(_hostile(Path("x"))))
def test_hostile_pickle_is_refused_before_it_runs(tmp_path, case):
    target = tmp_path / "pwned"
    pkl, global_name = _hostile(target)[case]
    path = torch_zip(tmp_path / "evil.pth", pkl)
    with pytest.raises(UnsafePickleError) as err:
        read_checkpoint(path)
    assert not target.exists()
    msg = str(err.value)
    assert f"the pickle asks for {global_name}" in msg and str(path) in msg
    assert "state dict" in msg and "torch.save(model.state_dict()" in msg  # the fix


def test_hostile_legacy_file_is_refused(tmp_path):
    target = tmp_path / "pwned"
    header = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2) + \
        pickle.dumps({"protocol_version": 1001}, protocol=2)
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(header + PROTO2 + g("os", "system") + tup(s(f"touch {target}")) + REDUCE + STOP)
    with pytest.raises(UnsafePickleError, match="os.system"):
        read_pth(path)
    assert not target.exists()


def test_extension_registry_goes_through_the_allow_list(tmp_path):
    # EXT1 looks the global up in copyreg's registry, then calls find_class: it must be refused too.
    target = tmp_path / "pwned"
    copyreg.add_extension("os", "system", 0xF1)
    try:
        path = torch_zip(tmp_path / "ext.pth", PROTO2 + b"\x82\xf1" + tup(s(f"touch {target}")) + REDUCE + STOP)
        with pytest.raises(UnsafePickleError, match="os.system"):
            read_pth(path)
    finally:
        copyreg.remove_extension("os", "system", 0xF1)
    assert not target.exists()


def test_whole_module_pickle_is_refused_with_the_fix(tmp_path):
    pkl = PROTO2 + g("timm.models.swin_transformer", "SwinTransformer") + b")" + b"\x81" + STOP  # NEWOBJ
    with pytest.raises(UnsafePickleError, match="SwinTransformer, which is a whole pickled model.*state_dict"):
        read_pth(torch_zip(tmp_path / "model.pth", pkl))


def test_build_cannot_tamper_with_the_allow_list(tmp_path):
    # BUILD with slot state on an allowed stand-in would otherwise rewrite FloatStorage's dtype for later loads.
    pkl = PROTO2 + g("torch", "FloatStorage") + tup(NONE + b"}" + s("dtype") + s("object") + SETITEM) + BUILD + STOP
    with pytest.raises(CheckpointError, match="corrupt pickle"):
        read_pth(torch_zip(tmp_path / "tamper.pth", pkl))
    data = np.arange(3, dtype="<f4")
    obj, _ = read_pth(torch_zip(tmp_path / "after.pth", tensor_pkl(3, (3,), (1,)), {"0": data.tobytes()}))
    assert obj["w"].dtype == np.float32


def test_tensor_cannot_read_past_its_storage(tmp_path):
    data = np.arange(4, dtype="<f4").tobytes()
    for size, stride, offset in [((100,), (1,), 0), ((2, 2), (3, 1), 0), ((4,), (1,), 1)]:
        path = torch_zip(tmp_path / "oob.pth", tensor_pkl(4, size, stride, offset), {"0": data})
        with pytest.raises(CheckpointError, match="reaches"):
            read_pth(path)


def test_storage_shorter_than_declared(tmp_path):
    path = torch_zip(tmp_path / "short.pth", tensor_pkl(8, (8,), (1,)), {"0": np.zeros(3, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_pth(path)


# ---------------------------------------------------------------------------------------------------------------
# Damaged files.


def test_truncated_zip(tmp_path):
    raw = (DATA / "views.pth").read_bytes()
    path = tmp_path / "trunc.pth"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_corrupted_member_fails_its_checksum(tmp_path):
    raw = bytearray((DATA / "views.pth").read_bytes())
    with zipfile.ZipFile(DATA / "views.pth") as z:
        info = next(x for x in z.infolist() if x.filename.endswith("/data/0"))
    # The data starts after the 30-byte local header, the name and the extra field.
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + 5] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"data/0.*corrupt"):
        read_pth(path)


def test_missing_member(tmp_path):
    path = torch_zip(tmp_path / "missing.pth", tensor_pkl(3, (3,), (1,)), {})
    with pytest.raises(CheckpointError, match="missing"):
        read_pth(path)


def test_wrong_byteorder_record(tmp_path):
    data = np.arange(3, dtype="<f4").tobytes()
    path = torch_zip(tmp_path / "bo.pth", tensor_pkl(3, (3,), (1,)), {"0": data}, byteorder=b"middle")
    with pytest.raises(CheckpointError, match="byteorder"):
        read_pth(path)


def test_big_endian_archive_is_swapped(tmp_path):
    # A file written on a big-endian machine: same pickle, every storage byte-swapped, byteorder 'big'.
    src = DATA / "views.pth"  # every storage in it is float32
    out = tmp_path / "big.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item)
            if "/data/" in item.filename:
                raw = np.frombuffer(raw, "<f4").astype(">f4").tobytes()
            elif item.filename.endswith("/byteorder"):
                raw = b"big"
            zout.writestr(item.filename, raw)
    big, info = read_pth(out)
    little, _ = read_pth(src)
    assert info["byteorder"] == "big"
    for k in little:
        np.testing.assert_array_equal(big[k], little[k])
        assert big[k].dtype.isnative


def test_truncated_legacy_file(tmp_path):
    raw = (DATA / "legacy.pth").read_bytes()
    path = tmp_path / "legacy_cut.pth"
    path.write_bytes(raw[:-40])
    with pytest.raises(CheckpointError, match="truncated"):
        read_pth(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", b"\x00" * 64, b"PK\x03\x04garbage"])
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


def test_torchscript_archive_is_named(tmp_path):
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("scripted/data.pkl", PROTO2 + EMPTY_DICT + STOP)
        z.writestr("scripted/code/__torch__.py", "")
        z.writestr("scripted/constants.pkl", PROTO2 + b")" + STOP)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_pth(path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint("/nonexistent/weights.pth")
    assert os.path.exists(DATA)


def test_persistent_ids_are_checked(tmp_path):
    # torch.save(model) of old writes ('module', cls, file, source) ids: refused, with the fix.
    pkl = PROTO2 + tup(s("module"), s("os"), s("f.py"), s("src")) + BINPERSID + STOP
    with pytest.raises(UnsafePickleError, match="pickled torch.nn.Module"):
        read_pth(torch_zip(tmp_path / "module.pth", pkl))
    # A storage id whose "type" is not one of the allowed storage classes.
    pkl = PROTO2 + tup(s("storage"), s("posix.system"), s("0"), s("cpu"), i(1)) + BINPERSID + STOP
    with pytest.raises(CheckpointError, match="corrupt storage reference"):
        read_pth(torch_zip(tmp_path / "pid.pth", pkl, {"0": b"\0" * 4}))
    pkl = PROTO2 + tup(s("storage"), g("torch", "FloatStorage"), s("0"), s("cpu"), i(-5)) + BINPERSID + STOP
    with pytest.raises(CheckpointError, match="corrupt storage reference"):
        read_pth(torch_zip(tmp_path / "neg.pth", pkl, {"0": b"\0" * 4}))


# ---------------------------------------------------------------------------------------------------------------
# detectron2 / Mask2Former .pkl files: plain pickles of NumPy arrays, read by the same unpickler.


def d2_checkpoint(model: dict) -> dict:
    """What detectron2 (and Mask2Former's conversion tools) pickle: the weights under 'model' beside two tags."""
    return {"model": model, "__author__": "third_party", "matching_heuristics": True}


D2_ARRAYS = {
    "backbone.patch_embed.proj.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "half_big_endian": np.arange(3, dtype=">f2"),
    "flags": np.array([True, False]),
    "index": np.arange(4, dtype=np.int64),
    "empty": np.zeros((0, 3), np.float32),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_detectron2_pickle_reads_numpy_arrays(tmp_path, protocol):
    # Protocol 2 and the default (4) spell arrays numpy._core.multiarray._reconstruct + numpy.ndarray + BUILD;
    # protocol 5 spells them numpy._core.numeric._frombuffer; numpy.dtype and scalar are shared with .pth metadata.
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({**d2_checkpoint(dict(D2_ARRAYS)), "iteration": np.int64(7)}, f, protocol=protocol)
    obj, info = read_pth(path)
    assert info["container"] == "pickle" and obj["__author__"] == "third_party" and obj["iteration"] == 7
    for name, want in D2_ARRAYS.items():
        got = obj["model"][name]
        assert got.dtype == want.dtype.newbyteorder("=") and got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_detectron2_pickle_default_protocol_is_what_pickle_dump_writes(tmp_path):
    path = tmp_path / "default.pkl"
    with open(path, "wb") as f:
        pickle.dump(d2_checkpoint(dict(D2_ARRAYS)), f)  # exactly what detectron2 does
    assert set(read_pth(path)[0]["model"]) == set(D2_ARRAYS)


def _d2_hostile(target: Path) -> dict[str, tuple[bytes, str]]:
    """detectron2-shaped pickles whose payload would create `target`: at the top, and nested inside 'model'."""
    t = str(target)
    model_head = PROTO2 + EMPTY_DICT + s("__author__") + s("third_party") + SETITEM + s("model") + EMPTY_DICT
    array = pickle.dumps(np.zeros(2, np.float32), protocol=2)[2:-1]  # a real array record, nested beside the payload

    def nested(payload: bytes) -> bytes:
        return model_head + s("backbone.norm0.weight") + array + SETITEM + s("backbone.norm0.bias") + payload + \
            SETITEM + SETITEM + STOP

    return {
        "top-level os.system": (PROTO2 + g("os", "system") + tup(s(f"touch {t}")) + REDUCE + STOP, "os.system"),
        "nested os.system": (nested(g("os", "system") + tup(s(f"touch {t}")) + REDUCE), "os.system"),
        "nested builtins.eval": (nested(g("builtins", "eval") + tup(s(f"open({t!r}, 'w')")) + REDUCE),
                                 "builtins.eval"),
        "nested numpy.load (outside the list)": (nested(g("numpy", "load") + tup(s(t)) + REDUCE), "numpy.load"),
        "STACK_GLOBAL in the model dict": (
            b"\x80\x04" + EMPTY_DICT + s("model") + EMPTY_DICT + s("w") + s("posix") + s("system") + b"\x93"
            + tup(s(f"touch {t}")) + REDUCE + SETITEM + SETITEM + STOP, "posix.system"),
        # A real array's rebuild function asked to make another type (a callable) is refused before anything runs.
        "_reconstruct of os.system": (
            nested(g("numpy._core.multiarray", "_reconstruct") + tup(g("os", "system"), tup(i(0)), s("b")) + REDUCE),
            "os.system"),
    }


@pytest.mark.parametrize("case", list(_d2_hostile(Path("x"))))
def test_hostile_detectron2_pickle_is_refused_before_it_runs(tmp_path, case):
    target = tmp_path / "pwned"
    pkl, global_name = _d2_hostile(target)[case]
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pkl)
    with pytest.raises(UnsafePickleError) as err:
        read_checkpoint(path)
    assert not target.exists() and sorted(os.listdir(tmp_path)) == ["model_final.pkl"]
    assert f"the pickle asks for {global_name}" in str(err.value)


def test_the_hostile_payloads_do_run_under_plain_pickle(tmp_path):
    # The payloads above are real: plain pickle.loads runs the nested one (proving the refusal is what stops it).
    target = tmp_path / "pwned"
    pickle.loads(_d2_hostile(target)["nested os.system"][0])
    assert target.exists()


def test_numpy_array_records_are_checked_before_any_array_is_made(tmp_path):
    dtype = g("numpy", "dtype") + tup(s("f4"), FALSE, b"\x88") + REDUCE  # numpy.dtype('f4', False, True)

    def frombuffer(raw: bytes, shape: tuple) -> bytes:
        record = tup(b"B" + struct.pack("<I", len(raw)) + raw, dtype, tup(*map(i, shape)), s("C"))
        return PROTO2 + EMPTY_DICT + s("w") + g("numpy._core.numeric", "_frombuffer") + record + REDUCE + SETITEM + STOP

    cases = {
        "a shape far larger than its bytes": (frombuffer(b"\0" * 8, (2**30, 2**30, 2**30)), "needs .* bytes but carries 8"),
        "too few bytes": (frombuffer(b"\0" * 7, (2,)), "needs 8 bytes but carries 7"),
        "negative shape": (frombuffer(b"", (-1,)), "shape"),
        "object dtype": (PROTO2 + g("numpy", "dtype") + tup(s("O"), FALSE, b"\x88") + REDUCE + STOP, "only numbers"),
        "BUILD twice": (PROTO2 + g("numpy._core.multiarray", "_reconstruct") + tup(g("numpy", "ndarray"), tup(i(0)),
                        s("b")) + REDUCE + tup(i(1), tup(i(1)), dtype, FALSE, b"B\x04\0\0\0" + b"\0" * 4) + BUILD
                        + tup(i(1), tup(i(1)), dtype, FALSE, b"B\x04\0\0\0" + b"\0" * 4) + BUILD + STOP, "twice"),
        "never filled": (PROTO2 + g("numpy._core.multiarray", "_reconstruct") + tup(g("numpy", "ndarray"), tup(i(0)),
                         s("b")) + REDUCE + STOP, "never filled"),
        "bytes(n) would allocate": (PROTO2 + g("__builtin__", "bytes") + tup(i(2**30)) + REDUCE + STOP, "bytes"),
    }
    for name, (pkl, message) in cases.items():
        path = tmp_path / "bad.pkl"
        path.write_bytes(pkl)
        with pytest.raises(CheckpointError, match=message):
            read_pth(path)


def test_torch_tensors_written_by_plain_pickle_are_refused_with_the_fix(tmp_path):
    # Mask2Former's convert-pretrained-swin-model-to-d2.py pickles torch tensors with pickle.dump: their storages
    # are torch.save archives inside the pickle (torch.storage._load_from_bytes), which swinref does not run.
    pkl = PROTO2 + g("torch.storage", "_load_from_bytes") + tup(b"B\x01\0\0\0x") + REDUCE + STOP
    path = tmp_path / "swin_tiny_patch4_window7_224.pkl"
    path.write_bytes(pkl)
    with pytest.raises(UnsafePickleError, match="plain pickle.dump .*original .pth"):
        read_pth(path)


def test_real_torch_tensors_in_a_plain_pickle_are_refused(tmp_path):
    # What Mask2Former's tools/convert-pretrained-swin-model-to-d2.py writes: pickle.dump of torch.load's tensors.
    torch = pytest.importorskip("torch", reason="writing torch tensors with pickle needs torch")
    target = tmp_path / "swin_tiny_patch4_window7_224.pkl"
    with open(target, "wb") as f:
        pickle.dump({"model": {"patch_embed.proj.bias": torch.zeros(2)}, "__author__": "third_party",
                     "matching_heuristics": True}, f)
    with pytest.raises(UnsafePickleError, match="torch.storage._load_from_bytes.*give swinref the original .pth"):
        read_checkpoint(target)
