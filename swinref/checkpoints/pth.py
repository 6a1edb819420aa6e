"""Read PyTorch `.pth` files without PyTorch.

A `.pth` file is a pickle whose tensors point at raw storages kept beside it. Since torch 1.6 the file is a zip
archive `<prefix>/data.pkl` + `<prefix>/data/<key>` (+ `<prefix>/byteorder`); before that it was a run of pickles
followed by the raw storages ("legacy" format). Both are read here into NumPy arrays.

A pickle is a program: unpickling runs whatever callables it names. So the unpickler below resolves only a short
allow-list of globals, each to a stand-in written here: nothing from torch (or anywhere else) is imported or
called, and any other global is refused with `UnsafePickleError` *before* anything runs. The allow-list is what
`torch.save` emits for tensors (checked by disassembling torch 2.14.1 output with pickletools):

  torch._utils._rebuild_tensor_v2 / _rebuild_tensor_v3 / _rebuild_parameter / _rebuild_parameter_with_state
  (and _rebuild_tensor, from torch < 0.4),
  torch._tensor._rebuild_from_type_v2 with torch.Tensor / torch.nn.parameter.Parameter,
  torch.<X>Storage (typed storages), torch.storage.UntypedStorage + torch.<dtype> (the v3 path),
  collections.OrderedDict.

Training checkpoints also carry metadata next to the weights; these globals get inert, data-only stand-ins (the
real class is never imported nor called; its pickled state is kept as plain data):

  argparse.Namespace (timm's 'args'), yacs.config.CfgNode (the official repository's 'config'),
  numpy scalars (numpy.core/numpy._core.multiarray.scalar + numpy.dtype + _codecs.encode, e.g. timm's 'metric'),
  set / frozenset (inside CfgNode's state).

detectron2 / Mask2Former `.pkl` files are plain pickles (`pickle.dump`) of {"model": {name: NumPy array}, ...}; read
by the same unpickler (`read_pickle`), with the globals NumPy's own array pickling emits (checked with pickletools
on NumPy 2.4: protocol 2 and the default protocol 4 spell an array as numpy._core.multiarray._reconstruct(
numpy.ndarray, (0,), b'b') + BUILD (version, shape, numpy.dtype(...), fortran, raw bytes); protocol 5 as
numpy._core.numeric._frombuffer(bytes, numpy.dtype(...), shape, order); NumPy 1 writes numpy.core.*):

  numpy.core/numpy._core.multiarray._reconstruct, numpy.ndarray (only as _reconstruct's first argument),
  numpy.core/numpy._core.numeric._frombuffer, and __builtin__.bytes called without arguments (protocol 2 spells
  an empty array's b"" so).

Their stand-ins accept numeric dtypes only and check that the raw bytes are exactly shape x itemsize before any
array is made; the array is a copy of those bytes (nothing is allocated from a size the pickle merely claims).

Bounds are checked before any view is taken: a storage must hold every element a tensor's (offset, size, stride)
reaches, so a crafted file cannot make NumPy read outside the bytes that were loaded. A view that reaches the same
elements more than once (stride 0, as torch's expand() saves) is copied only up to `_MAX_OVERLAPPING_VIEW` elements.

Before CPython's unpickler runs, `_check_pickle` walks the opcodes (pickletools.genops: nothing is built) and
refuses what would make the unpickler itself allocate or recurse without bound: a length argument beyond the bytes
left (CPython 3.11 allocates the declared length first), a memo index beyond the entries written so far (the memo
is an array sized by the largest index), tuples and other values nested deeper than bounds.MAX_NESTING (CPython
hashes a nested tuple key recursively in C, which crashes the process near 100,000 levels), and values whose
shared references expand to more than `_MAX_EXPANDED` nodes ("billion laughs": lists of the same list).
"""

from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import pickletools
import struct
from typing import Any

import numpy as np

from swinref.checkpoints.bounds import MAX_NESTING, SafeZip, check_regular, open_regular, shorten
from swinref.errors import CheckpointError, UnsafePickleError

__all__ = ["read_pth", "OpaqueObject", "OpaqueDict", "is_pth_bytes", "is_pickle_bytes"]

_RESAVE_HINT = (
    "if you trust the file, load it with torch and save only the weights: "
    "torch.save(model.state_dict(), 'weights.pth') or safetensors.torch.save_file(...)"
)

# Legacy (pre-1.6) files start with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a"
_LEGACY_PROTOCOL = 1001


def is_pth_bytes(head: bytes) -> bool:
    """True when the first bytes look like a torch file (zip archive or legacy pickle)."""
    return head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_PREFIX)


def is_pickle_bytes(head: bytes) -> bool:
    """True when the first bytes are a plain pickle of protocol 2..5 (detectron2 .pkl), not a legacy torch file."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not head.startswith(_LEGACY_PREFIX)


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins for the allowed globals. Each accepts any arguments a crafted pickle could pass and raises
# CheckpointError on anything that is not the plain data torch writes.

# torch storage class name -> NumPy dtype of one element. BFloat16 has no NumPy dtype: it is read as its raw
# uint16 bits and widened to float32 (exact: bfloat16 is the top half of a float32).
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}

# torch dtypes that _rebuild_tensor_v3 can name (the dtypes that torch pickles with an untyped storage), limited to
# those NumPy can hold.
_V3_DTYPES = {"uint16": "uint16", "uint32": "uint32", "uint64": "uint64"}


class _Frozen:
    """Base of the stand-ins: a crafted pickle's BUILD opcode can neither call __setstate__ nor set attributes.

    Without this, BUILD could rewrite a shared stand-in (say FloatStorage's dtype) or a tensor record's offset
    after its bounds were checked. Code here sets attributes with object.__setattr__.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise CheckpointError(f"corrupt pickle: it tries to set attribute {name!r} on a {type(self).__name__}")

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"corrupt pickle: it tries to set the state of a {type(self).__name__}")


def _init(obj: _Frozen, **fields: Any) -> None:
    for name, value in fields.items():
        object.__setattr__(obj, name, value)


class _Callable(_Frozen):
    """An allowed function, wrapped so that BUILD cannot change its defaults."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        _init(self, fn=fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class _StorageType(_Frozen):
    """Stands for a torch storage class (torch.FloatStorage, ...): only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        _init(self, name=name, dtype=dtype)


class _TorchDtype(_Frozen):
    """Stands for a torch.dtype object used by _rebuild_tensor_v3."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        _init(self, name=name, dtype=dtype)


class _TensorType(_Frozen):
    """Stands for torch.Tensor / torch.nn.Parameter as named by _rebuild_from_type_v2."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        _init(self, name=name)


class _Storage(_Frozen):
    """One storage: `numel` elements of `dtype`, filled from the archive (zip) or after the pickle (legacy)."""

    __slots__ = ("key", "dtype", "numel", "big_endian", "data", "view_of")

    def __init__(self, key: str, dtype: str, numel: int, big_endian: bool = False):
        # data: 1-D array of numel elements in native byte order (bfloat16 already widened to float32)
        _init(self, key=key, dtype=dtype, numel=numel, big_endian=big_endian, data=None, view_of=None)


class _PendingTensor(_Frozen):
    """A tensor whose storage may not be read yet: (storage, offset, size, stride) in elements."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], dtype: str):
        _init(self, storage=storage, offset=offset, size=size, stride=stride, dtype=dtype)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointError(f"corrupt tensor record: {what} should be a tuple of integers, got {shorten(value)}")
    if len(value) > 32:
        raise CheckpointError(f"corrupt tensor record: {what} has {len(value)} dimensions (at most 32 are read)")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, dtype: str | None = None) -> _PendingTensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"corrupt tensor record: expected a storage, got {type(storage).__name__}")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"corrupt tensor record: storage offset {shorten(storage_offset)}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride) or any(s < 0 or s >= 2**62 for s in size + stride):
        raise CheckpointError(f"corrupt tensor record: size {shorten(size)} and stride {shorten(stride)} do not "
                              f"describe a tensor")
    if dtype is None:
        dtype = storage.dtype
    elif storage.dtype != "uint8":
        raise CheckpointError("corrupt tensor record: a dtype was given for a typed storage")
    if all(size):
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        src_itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
        available = storage.numel * src_itemsize // itemsize
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= available:
            raise CheckpointError(
                f"corrupt tensor record: a tensor of size {shorten(size)}, stride {shorten(stride)} at offset "
                f"{storage_offset} reaches "
                f"element {last} but its storage holds {available}"
            )
    return _PendingTensor(storage, storage_offset, size, stride, dtype)


def _rebuild_tensor_v1(storage, storage_offset, size, stride, *extra):
    # torch < 0.4 wrote tensors through torch._utils._rebuild_tensor (no requires_grad / hooks).
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None, *extra):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None, *extra):
    if not isinstance(dtype, _TorchDtype):
        raise CheckpointError(f"corrupt tensor record: expected a torch dtype, got {type(dtype).__name__}")
    return _rebuild_tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *extra):
    # A Parameter is its tensor; requires_grad and hooks mean nothing here.
    if not isinstance(data, _PendingTensor):
        raise CheckpointError(f"corrupt parameter record: expected a tensor, got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None, *extra):
    return _rebuild_parameter(data)


def _rebuild_from_type_v2(func, new_type, args, state=None):
    # torch pickles a Tensor/Parameter carrying Python attributes this way; the attributes are dropped.
    if not isinstance(func, _Callable) or func.fn not in (
        _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter, _rebuild_parameter_with_state
    ):
        raise CheckpointError("corrupt tensor record: _rebuild_from_type_v2 names an unknown rebuild function")
    if not isinstance(new_type, _TensorType) or not isinstance(args, tuple):
        raise CheckpointError("corrupt tensor record: _rebuild_from_type_v2 got unexpected arguments")
    return func(*args)


class OpaqueObject:
    """Inert stand-in for an allowed metadata object (argparse.Namespace, ...): its class is never imported.

    `global_name` is what the pickle asked for; `state` is the plain data it carried (e.g. the Namespace's dict).
    """

    global_name = "?"
    args: tuple = ()  # NEWOBJ creates the object without calling __init__
    state: Any = None

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.global_name} (not loaded: metadata)>"


class OpaqueDict(dict):
    """Inert stand-in for a dict subclass used as metadata (yacs.config.CfgNode): items kept, class never imported."""

    global_name = "?"
    state: Any = None

    def __init__(self, *args, **kwargs):
        super().__init__()  # the pickle fills the items by SETITEMS; constructor arguments are ignored

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.global_name} {dict.__repr__(self)}>"


def _opaque(base: type, global_name: str) -> type:
    return type(global_name.rsplit(".", 1)[-1], (base,), {"global_name": global_name, "__slots__": ()})


class _NumpyDtypeSpec:
    """Stands for numpy.dtype(...) inside a pickled NumPy scalar; only plain numeric kinds are accepted."""

    def __init__(self, spec=None, align=False, copy=False, *extra):
        if not isinstance(spec, str):
            raise CheckpointError(f"unsupported NumPy dtype in the pickle: {shorten(spec)}")
        try:
            dt = np.dtype(spec)
        except (TypeError, ValueError, SyntaxError, RecursionError):
            raise CheckpointError(f"unsupported NumPy dtype in the pickle: {shorten(spec)}") from None
        if dt.kind not in "biufc":
            raise CheckpointError(f"refusing NumPy dtype {shorten(spec)} in the pickle: only numbers are read")
        self.dtype = dt

    def __setstate__(self, state: Any) -> None:
        # numpy pickles (version, byteorder, ...); only the byte order matters for plain numbers.
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype, data=None, *extra):
    if not isinstance(dtype, _NumpyDtypeSpec) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise CheckpointError("corrupt NumPy scalar in the pickle")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


class _NdarrayType(_Frozen):
    """Stands for numpy.ndarray, accepted only as the subtype _reconstruct is asked to make."""

    __slots__ = ()


def _checked_array(raw: Any, dtype: Any, shape: Any, fortran: bool, what: str) -> np.ndarray:
    """A copy of `raw` as an array of `shape`: the byte count is checked against shape x itemsize first."""
    if not isinstance(dtype, _NumpyDtypeSpec):
        raise CheckpointError(f"corrupt NumPy array in the pickle: {what} has no plain numeric dtype")
    if isinstance(raw, bytearray):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise CheckpointError(f"corrupt NumPy array in the pickle: {what} carries {type(raw).__name__}, not bytes")
    shape = _int_tuple(shape, f"{what} shape")
    if any(n < 0 for n in shape):
        raise CheckpointError(f"corrupt NumPy array in the pickle: {what} has shape {shape}")
    count = 1
    for n in shape:
        count *= n  # Python integers: a crafted shape cannot overflow
    if count * dtype.dtype.itemsize != len(raw):
        raise CheckpointError(
            f"corrupt NumPy array in the pickle: {what} of shape {shape} and dtype {dtype.dtype} needs "
            f"{count * dtype.dtype.itemsize} bytes but carries {len(raw)}"
        )
    flat = np.frombuffer(raw, dtype=dtype.dtype, count=count).astype(dtype.dtype.newbyteorder("="), copy=True)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="C")


class _PendingArray:
    """What numpy._core.multiarray._reconstruct returns: an empty shell the pickle's BUILD fills exactly once."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "array" or getattr(self, "array", None) is not None:
            raise CheckpointError(f"corrupt pickle: it tries to set attribute {name!r} on a NumPy array")
        object.__setattr__(self, name, value)

    def __setstate__(self, state: Any) -> None:
        # NumPy's ndarray state: (version, shape, dtype, is_fortran, raw bytes) or, without version, the last four.
        if self.array is not None:
            raise CheckpointError("corrupt pickle: it sets the state of a NumPy array twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise CheckpointError("corrupt NumPy array in the pickle: unexpected state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(fortran, bool):
            raise CheckpointError("corrupt NumPy array in the pickle: unexpected state")
        self.array = _checked_array(raw, dtype, shape, fortran, "an array")


def _numpy_reconstruct(subtype, shape=None, code=None, *extra):
    if not isinstance(subtype, _NdarrayType):
        raise CheckpointError("corrupt NumPy array in the pickle: _reconstruct is asked for another type")
    return _PendingArray()


def _numpy_frombuffer(buf, dtype, shape, order="C", *extra):
    if order not in ("C", "F"):
        raise CheckpointError(f"corrupt NumPy array in the pickle: order {shorten(order)}")
    return _checked_array(buf, dtype, shape, order == "F", "an array")


def _empty_bytes(*args):
    # Protocol 2 spells b"" as __builtin__.bytes() (the raw data of an empty array); nothing else is accepted
    # (bytes(n) would allocate n bytes).
    if args:
        raise CheckpointError("unexpected use of bytes() in the pickle")
    return b""


def _codecs_encode(text, encoding="utf-8", *extra):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); nothing else is accepted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("unexpected use of _codecs.encode in the pickle")
    return text.encode("latin1")


def _build_allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor"): _Callable(_rebuild_tensor_v1),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _Callable(_rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _Callable(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Callable(_rebuild_parameter_with_state),
        ("torch._tensor", "_rebuild_from_type_v2"): _Callable(_rebuild_from_type_v2),
        ("torch", "Tensor"): _TensorType("Tensor"),
        ("torch._tensor", "Tensor"): _TensorType("Tensor"),
        ("torch.nn.parameter", "Parameter"): _TensorType("Parameter"),
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", "uint8"),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", "uint8"),
        ("collections", "OrderedDict"): _Callable(collections.OrderedDict),
        ("argparse", "Namespace"): _opaque(OpaqueObject, "argparse.Namespace"),
        ("yacs.config", "CfgNode"): _opaque(OpaqueDict, "yacs.config.CfgNode"),
        ("numpy.core.multiarray", "scalar"): _Callable(_numpy_scalar),
        ("numpy._core.multiarray", "scalar"): _Callable(_numpy_scalar),
        ("numpy", "dtype"): _Callable(_NumpyDtypeSpec),
        # NumPy arrays (detectron2 .pkl files): see the module docstring.
        ("numpy.core.multiarray", "_reconstruct"): _Callable(_numpy_reconstruct),
        ("numpy._core.multiarray", "_reconstruct"): _Callable(_numpy_reconstruct),
        ("numpy", "ndarray"): _NdarrayType(),
        ("numpy.core.numeric", "_frombuffer"): _Callable(_numpy_frombuffer),
        ("numpy._core.numeric", "_frombuffer"): _Callable(_numpy_frombuffer),
        ("__builtin__", "bytes"): _Callable(_empty_bytes),  # protocol 2: an empty array's raw data, bytes()
        ("_codecs", "encode"): _Callable(_codecs_encode),
        # yacs keeps a set of deprecated keys in every CfgNode; protocol 2 spells builtins as __builtin__.
        ("builtins", "set"): _Callable(set),
        ("__builtin__", "set"): _Callable(set),
        ("builtins", "frozenset"): _Callable(frozenset),
        ("__builtin__", "frozenset"): _Callable(frozenset),
    }
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype)
    for name, dtype in _V3_DTYPES.items():
        allowed[("torch", name)] = _TorchDtype(name, dtype)
    return allowed


_ALLOWED = _build_allowed()


# Globals that mean the file holds a pickled model object rather than its state dict.
_MODEL_MODULES = ("timm.", "transformers.", "torchvision.", "torch.nn.modules")


class _SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the allow-list above; storages come from `load_storage`."""

    def __init__(self, file, source: str, load_storage):
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        # Called for GLOBAL, STACK_GLOBAL, INST and the EXT* opcodes alike: nothing outside the list resolves.
        found = _ALLOWED.get((module, name))
        if found is None:
            what = f"{module}.{name}"
            if "__torch__" in module or module.startswith(_MODEL_MODULES):
                kind = "a whole pickled model, not a state dict"
            elif (module, name) == ("torch.storage", "_load_from_bytes"):
                kind = ("a torch tensor written by plain pickle.dump (Mask2Former's "
                        "convert-pretrained-swin-model-to-d2.py writes these); give swinref the original .pth")
            elif module == "torch" or module.startswith("torch."):
                kind = "a torch object swinref does not read (only dense tensors on CPU-readable storages are)"
            else:
                kind = "not a tensor type"
            raise UnsafePickleError(
                f"refusing to load {self._source}: the pickle asks for {what}, which is {kind}; swinref only "
                f"loads plain state dicts (tensors in dicts, lists and numbers). {_RESAVE_HINT}"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise CheckpointError(f"{self._source}: unexpected persistent id in a metadata pickle (corrupt file?)")
        return self._load_storage(pid)


# Bounds of _check_pickle and _materialize.
_MAX_EXPANDED = 5_000_000  # nodes a pickled value may expand to, counting shared references each time
_MAX_OVERLAPPING_VIEW = 1 << 24  # elements of a tensor view that reaches storage elements more than once
_MAX_MEMO_GAP = 1 << 16  # how far past the entries written so far a memo index may point


class _BoundedReader:
    """A file-like view of bytes (or an mmap) from `start`: read(n) never returns (or allocates) more than what is
    left, readline never scans more than 64 KiB."""

    def __init__(self, buf, start: int = 0):
        self._buf = buf
        self.pos = start

    def read(self, n: int = -1) -> bytes:
        end = len(self._buf) if n is None or n < 0 else min(len(self._buf), self.pos + n)
        out = bytes(self._buf[self.pos:end])
        self.pos = end
        return out

    def readline(self, limit: int = -1) -> bytes:
        stop = min(len(self._buf), self.pos + (65536 if limit is None or limit < 0 else limit))
        nl = self._buf.find(b"\n", self.pos, stop)
        return self.read((nl + 1 if nl >= 0 else stop) - self.pos)

    def tell(self) -> int:
        return self.pos


_MARK = object()
_BUILDERS = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "LIST", "DICT", "FROZENSET", "REDUCE", "NEWOBJ", "NEWOBJ_EX",
             "OBJ", "INST", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BINPERSID"}
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


def _check_pickle(buf, start: int, source: str) -> int:
    """Walk one pickle's opcodes from `start` without building anything; return where it ends (after STOP).

    A shadow stack holds, for every value, [nesting depth, expanded node count]; containers changed in place
    (APPEND, SETITEM, BUILD) share their cell through DUP and the memo. CheckpointError for what the module
    docstring lists."""
    reader = _BoundedReader(buf, start)
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    puts = 0
    try:
        for op, arg, _pos in pickletools.genops(reader):
            name = op.name
            if name in _PUTS or name == "MEMOIZE":
                index = len(memo) if name == "MEMOIZE" else arg
                if index > puts + _MAX_MEMO_GAP or index < 0:
                    raise CheckpointError(f"{source}: the pickle writes memo entry {index} after only {puts} "
                                          f"entries: the file is corrupt")
                puts += 1
                if not stack:
                    raise CheckpointError(f"{source}: the pickle memoizes an empty stack: the file is corrupt")
                memo[index] = stack[-1]
                continue
            if name in _GETS:
                if arg not in memo:
                    raise CheckpointError(f"{source}: the pickle reads memo entry {arg}, which was never written: "
                                          f"the file is corrupt")
                stack.append(memo[arg])
                continue
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name == "STOP":
                return reader.pos
            if name == "DUP":
                if not stack:
                    raise CheckpointError(f"{source}: the pickle duplicates an empty stack: the file is corrupt")
                stack.append(stack[-1])
                continue
            popped: list[Any] = []
            before = op.stack_before
            if pickletools.markobject in before:
                if not marks:
                    raise CheckpointError(f"{source}: the pickle uses a mark it never set: the file is corrupt")
                at = marks.pop()
                popped = stack[at:]
                del stack[at:]
                fixed = before.index(pickletools.markobject)
                if name == "OBJ":  # MARK, class, args...: the class is the first item after the mark
                    fixed = 0
            else:
                fixed = len(before)
            if fixed:
                if len(stack) < fixed:
                    raise CheckpointError(f"{source}: the pickle's {name} finds too few values: the file is corrupt")
                popped = stack[len(stack) - fixed:] + popped
                del stack[len(stack) - fixed:]
            if not op.stack_after:
                continue
            children = popped
            if name in _MUTATORS:
                cell, children = popped[0], popped[1:]
            else:
                cell = [0, 1]
            if name in _BUILDERS and children:
                cell[0] = max(cell[0], 1 + max(c[0] for c in children))
                cell[1] = cell[1] + sum(c[1] for c in children)
                if cell[0] > MAX_NESTING:
                    raise CheckpointError(f"{source}: the pickle nests values more than {MAX_NESTING} levels deep: "
                                          f"the file is corrupt or crafted; re-save it from its source")
                if cell[1] > _MAX_EXPANDED:
                    raise CheckpointError(f"{source}: the pickle's values expand to more than {_MAX_EXPANDED} "
                                          f"nodes through shared references: the file is corrupt or crafted")
            stack.extend([cell] + [[0, 1] for _ in op.stack_after[1:]])
    except CheckpointError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, EOFError, UnicodeDecodeError, OverflowError,
            MemoryError) as exc:
        raise CheckpointError(
            f"{source}: the pickle is corrupt ({type(exc).__name__}: {shorten(str(exc), 160)}); re-download or "
            f"re-save the file"
        ) from None
    raise CheckpointError(f"{source}: the pickle ends without its STOP opcode: the file is truncated")


def _unpickle(buf, start: int, source: str, load_storage) -> tuple[Any, int]:
    """The value of the pickle at buf[start:] (bytes or an mmap) and where it ends; checked by _check_pickle first."""
    end = _check_pickle(buf, start, source)
    if isinstance(buf, bytes):
        reader = io.BytesIO(buf)
        reader.seek(start)
    else:
        reader = _BoundedReader(buf, start)
    try:
        value = _SafeUnpickler(reader, source, load_storage).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            struct.error, MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{source}: the pickle is corrupt ({type(exc).__name__}: {shorten(str(exc), 160)}); re-download or "
            f"re-save the file"
        ) from None
    if reader.tell() != end:
        raise CheckpointError(f"{source}: the pickle is corrupt (it ends at byte {reader.tell()}, not {end})")
    return value, end


def _decode_id(pid: Any, source: str) -> tuple:
    if not isinstance(pid, tuple) or not pid:
        raise CheckpointError(f"{source}: corrupt storage reference {shorten(pid)}")
    kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
    if kind == "module":
        raise UnsafePickleError(
            f"refusing to load {source}: it holds a pickled torch.nn.Module (saved with torch.save(model)), not a "
            f"state dict. {_RESAVE_HINT}"
        )
    if kind != "storage":
        raise CheckpointError(f"{source}: unknown persistent id kind {shorten(kind)} (corrupt file?)")
    return pid[1:]


def _check_storage_args(storage_type, key, numel, source: str) -> tuple[str, str, int]:
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"{source}: corrupt storage reference (type {shorten(storage_type)})")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise CheckpointError(f"{source}: corrupt storage reference (key {shorten(key)}, size {shorten(numel)})")
    return storage_type.dtype, key, numel


def _as_array(raw: bytes | memoryview, dtype: str, numel: int, big_endian: bool, what: str) -> np.ndarray:
    """Raw little/big-endian bytes -> a 1-D native array of `numel` elements (bfloat16 widened to float32)."""
    src = "uint16" if dtype == "bfloat16" else dtype
    itemsize = np.dtype(src).itemsize
    if len(raw) < numel * itemsize:
        raise CheckpointError(
            f"{what} holds {len(raw)} bytes but the pickle says {numel} x {itemsize}: the file is truncated or "
            f"corrupt; re-download or re-save it"
        )
    dt = np.dtype(src).newbyteorder(">" if big_endian else "<")
    arr = np.frombuffer(raw, dtype=dt, count=numel).astype(np.dtype(src).newbyteorder("="), copy=True)
    if dtype == "bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


class _Walk:
    """What _materialize may still spend (distinct nodes, bytes copied), and what it already made: a container
    reached again through a shared reference is made once (linear in the pickle's size, however the references
    multiply), and one that reaches itself is refused."""

    def __init__(self, nbytes: int):
        self.nodes = _MAX_EXPANDED
        self.nbytes = nbytes
        self.widened: set[str] = set()
        self.made: dict[int, Any] = {}


_IN_PROGRESS = object()


def _tensor_array(obj: _PendingTensor, walk: _Walk, path: str) -> np.ndarray:
    st = obj.storage
    what = shorten(path or "a tensor")
    if st.data is None:
        raise CheckpointError(f"the storage of {what} was never written: the file is truncated")
    base = st.data
    if obj.dtype != st.dtype:  # v3: an untyped (uint8) storage reinterpreted as another dtype
        dt = np.dtype(obj.dtype)
        base = base[: base.size // dt.itemsize * dt.itemsize].view(dt.newbyteorder(">" if st.big_endian else "<"))
        base = base.astype(dt, copy=False)
    if obj.dtype == "bfloat16" or st.dtype == "bfloat16":
        walk.widened.add(path)
    numel = 1
    for n in obj.size:
        numel *= n
    if numel == 0:
        return np.zeros(obj.size, dtype=base.dtype)
    # Checked again here, against the bytes actually read: as_strided itself checks nothing.
    last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
    if base.ndim != 1 or last >= base.size:
        raise CheckpointError(f"corrupt tensor record for {what}: it reaches past its storage")
    if numel > base.size - obj.offset and numel > _MAX_OVERLAPPING_VIEW:
        raise CheckpointError(
            f"{what} is a view of {numel} elements over a storage of {base.size}: it repeats elements (stride 0, "
            f"torch's expand()), more than the {_MAX_OVERLAPPING_VIEW} swinref copies; save it with .contiguous() "
            f"(or clone()) first, or the file is corrupt"
        )
    walk.nbytes -= numel * base.itemsize
    if walk.nbytes < 0:
        raise CheckpointError(f"the tensors of this file (at {what}) need far more memory than its storages hold: "
                              f"too many views of the same storage; the file is corrupt or crafted")
    strides = tuple(s * base.itemsize if n > 1 else 0 for n, s in zip(obj.size, obj.stride))
    view = np.lib.stride_tricks.as_strided(base[obj.offset:], shape=obj.size, strides=strides, writeable=False)
    return np.array(view, order="C", copy=True)


def _materialize(obj: Any, walk: _Walk, path: str = "", depth: int = 0) -> Any:
    """Replace every pending tensor in a nested dict/list/tuple by a contiguous NumPy array, within `walk`'s budget
    and bounds.MAX_NESTING levels."""
    if isinstance(obj, _PendingTensor):
        return _tensor_array(obj, walk, path)
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise CheckpointError(f"corrupt NumPy array in the pickle: {shorten(path or 'an array')} was never filled")
        return obj.array
    if not isinstance(obj, (dict, list, tuple)) or isinstance(obj, (OpaqueObject, OpaqueDict)):
        return obj
    made = walk.made.get(id(obj))
    if made is _IN_PROGRESS:
        raise CheckpointError(f"the pickle's value at {shorten(path, 120)} contains itself: the file is corrupt or "
                              f"crafted; re-save it from its source")
    if made is not None:
        return made
    walk.nodes -= 1
    if walk.nodes < 0 or depth > MAX_NESTING:
        raise CheckpointError(
            f"the pickle's values nest deeper than {MAX_NESTING} levels or hold more than {_MAX_EXPANDED} "
            f"containers (at {shorten(path, 120)}): the file is corrupt or crafted; re-save it from its source"
        )
    walk.made[id(obj)] = _IN_PROGRESS
    if len(path) > 4096:
        path = path[:4000] + "..."
    if isinstance(obj, dict):
        for k in list(obj):
            key = shorten(k, 200) if not isinstance(k, str) or len(k) > 200 else k
            obj[k] = _materialize(obj[k], walk, f"{path}.{key}" if path else key, depth + 1)
        out: Any = obj
    elif isinstance(obj, list):
        out = [_materialize(v, walk, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    else:
        out = tuple(_materialize(v, walk, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj))
    walk.made[id(obj)] = out
    return out


# ---------------------------------------------------------------------------------------------------------------
# The two container formats.


def _read_zip(path: str) -> tuple[Any, dict]:
    with SafeZip(path, "a torch zip archive") as zf:
        names = zf.names
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1] or (
            ["data.pkl"] if "data.pkl" in names else []
        )
        if any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names):
            raise CheckpointError(
                f"{path} is a TorchScript archive (torch.jit.save), not a state dict; load it with torch and save "
                f"model.state_dict() with torch.save"
            )
        if len(pickles) != 1:
            if names and all(n.endswith(".npy") for n in names):
                raise CheckpointError(f"{path} is a NumPy .npz archive, not a torch file; give it a .npz name")
            raise CheckpointError(
                f"{path} is a zip archive without exactly one '<name>/data.pkl' ({len(pickles)} found): not a torch "
                f"checkpoint"
            )
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder", limit=16).decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError(
                    f"{path}: byteorder record says {shorten(order)}, expected 'little' or 'big': the file is corrupt"
                )
            big_endian = order == "big"
        storages: dict[str, _Storage] = {}

        def load_storage(pid: Any) -> _Storage:
            storage_type, key, _location, numel = _split(_decode_id(pid, path), 4, path)
            dtype, key, numel = _check_storage_args(storage_type, key, numel, path)
            if key not in storages:
                st = _Storage(key, dtype, numel, big_endian)
                # torch writes each storage as exactly numel * itemsize bytes; the member must declare that size
                # before it is inflated.
                nbytes = numel * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
                raw = zf.read(prefix + f"data/{key}", expected=nbytes)
                object.__setattr__(st, "data", _as_array(raw, dtype, numel, big_endian, f"{path}: storage {key}"))
                storages[key] = st
            st = storages[key]
            if st.dtype != dtype:
                raise CheckpointError(f"{path}: storage {key} is used with two dtypes ({st.dtype}, {dtype})")
            return st

        pkl = zf.read(prefix + "data.pkl", limit=max(zf.size * 4, 1 << 20))
        obj, end = _unpickle(pkl, 0, path, load_storage)
        if end != len(pkl):
            raise CheckpointError(f"{path}: bytes follow the pickle in data.pkl: the file is corrupt")
    return obj, {"container": "torch-zip", "byteorder": "big" if big_endian else "little",
                 "storage_bytes": sum(st.data.nbytes for st in storages.values())}


def _split(values: tuple, n: int, source: str) -> tuple:
    if len(values) != n:
        raise CheckpointError(f"{source}: corrupt storage reference with {len(values)} fields (expected {n})")
    return values


def _mapped(path: str):
    """The whole file as a read-only mmap (b"" when empty); only regular files."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""


def _read_legacy(path: str) -> tuple[Any, dict]:
    buf = _mapped(path)
    try:
        return _read_legacy_from(buf, path)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _read_legacy_from(buf, path: str) -> tuple[Any, dict]:
    pos = 0
    header = []
    try:
        for _ in range(3):
            value, pos = _unpickle(buf, pos, path, None)
            header.append(value)
    except CheckpointError:
        raise CheckpointError(f"{path}: the header of this legacy torch file is corrupt") from None
    magic, protocol, _sys_info = header
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(
            f"{path}: not a torch file (magic {shorten(magic)}, protocol {shorten(protocol)}); expected a file "
            f"written by torch.save"
        )
    roots: dict[str, _Storage] = {}
    views: dict[Any, _Storage] = {}

    def load_storage(pid: Any) -> _Storage:
        storage_type, key, _location, numel, view = _split(_decode_id(pid, path), 5, path)
        dtype, key, numel = _check_storage_args(storage_type, key, numel, path)
        if key not in roots:
            roots[key] = _Storage(key, dtype, numel)
        root = roots[key]
        if root.dtype != dtype or root.numel != numel:
            raise CheckpointError(f"{path}: storage {shorten(key)} is declared twice, differently (corrupt file)")
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise CheckpointError(f"{path}: corrupt storage view {shorten(view)}")
        view_key, offset, size = view
        if not isinstance(view_key, (str, bytes, int)):
            raise CheckpointError(f"{path}: corrupt storage view {shorten(view)}")
        if view_key not in views:
            if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset and 0 <= size
                    and offset + size <= numel):
                raise CheckpointError(f"{path}: a storage view {shorten(view)} reaches outside its storage of "
                                      f"{numel} elements (corrupt file)")
            st = _Storage(str(view_key), dtype, size)
            object.__setattr__(st, "view_of", (root, offset))  # data is sliced once the root's bytes are read
            views[view_key] = st
        return views[view_key]

    obj, pos = _unpickle(buf, pos, path, load_storage)
    keys, pos = _unpickle(buf, pos, path, None)
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: the storage list of this legacy torch file is corrupt")
    for key in keys:
        st = roots.get(key) if isinstance(key, str) else None
        if st is None:
            raise CheckpointError(f"{path}: storage {shorten(key)} is listed but never used (corrupt file?)")
        if st.data is not None:
            raise CheckpointError(f"{path}: storage {shorten(key)} is listed twice (corrupt file)")
        head = bytes(buf[pos:pos + 8])
        if len(head) != 8:
            raise CheckpointError(f"{path}: storage {shorten(key)} is missing: the file is truncated; re-download it")
        (numel,) = struct.unpack("<q", head)
        pos += 8
        if numel != st.numel:
            raise CheckpointError(f"{path}: storage {shorten(key)} has {numel} elements, the pickle says {st.numel}")
        nbytes = numel * (2 if st.dtype == "bfloat16" else np.dtype(st.dtype).itemsize)
        if pos + nbytes > len(buf):
            raise CheckpointError(f"{path}: storage {shorten(key)} needs {nbytes} bytes but only {len(buf) - pos} "
                                  f"remain: the file is truncated; re-download it")
        # Legacy files store little-endian data whatever the writer's machine was.
        object.__setattr__(st, "data", _as_array(buf[pos:pos + nbytes], st.dtype, numel, False,
                                                 f"{path}: storage {shorten(key)}"))
        pos += nbytes
    for st in views.values():
        root, offset = st.view_of
        if root.data is not None:
            object.__setattr__(st, "data", root.data[offset: offset + st.numel])
    return obj, {"container": "torch-legacy", "byteorder": "little",
                 "storage_bytes": sum(st.data.nbytes for st in roots.values() if st.data is not None)}


def _read_plain_pickle(path: str) -> tuple[Any, dict]:
    buf = _mapped(path)
    try:
        obj, end = _unpickle(buf, 0, path, None)
        if end != len(buf):
            raise CheckpointError(f"{path}: bytes follow the pickle: not a detectron2 .pkl file (corrupt?)")
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    return obj, {"container": "pickle", "byteorder": "native"}


def read_pth(path: str | os.PathLike) -> tuple[Any, dict]:
    """The object a `torch.save` file holds, with every tensor as a NumPy array, and facts about the file.

    Also reads plain pickles (detectron2 / Mask2Former .pkl: NumPy arrays, container 'pickle') with the same
    allow-list.
    Returns (obj, info); info has 'container' ('torch-zip', 'torch-legacy' or 'pickle'), 'byteorder' and 'widened'
    (the dotted paths of bfloat16 tensors that were widened to float32, which is exact).
    Raises UnsafePickleError for any global outside the allow-list (before it runs) and CheckpointError for a file
    that is truncated, corrupt or not a torch file.
    """
    path = os.fspath(path)
    with open_regular(path) as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        obj, info = _read_zip(path)
    elif head.startswith(_LEGACY_PREFIX):
        obj, info = _read_legacy(path)
    elif is_pickle_bytes(head):
        obj, info = _read_plain_pickle(path)
    elif _is_tar(path):
        raise CheckpointError(
            f"{path} is a tar archive: the pre-0.4 torch format, which swinref does not read; load it with an old "
            f"torch and save it again with torch >= 1.6 (torch.save(state_dict, path))"
        )
    else:
        raise CheckpointError(
            f"{path} is not a PyTorch file (starts with {head[:8]!r}); expected a zip archive written by torch.save "
            f"(or a legacy torch file), a .safetensors file, a .npz file or a Hugging Face model directory"
        )
    # Tensors may share a storage (tied weights) but not copy it over and over.
    walk = _Walk(2 * info.pop("storage_bytes", 0) + _MAX_OVERLAPPING_VIEW * 8)
    obj = _materialize(obj, walk)
    info["widened"] = sorted(walk.widened)
    return obj, info


def _is_tar(path: str) -> bool:
    import tarfile

    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False
