"""The forward pass on other array namespaces, proven without a GPU.

array_api_strict arrays placed on a non-default device stand in for CuPy: any hidden conversion to NumPy, any
mixing of devices and any use of a function outside the standard raises there. The whole network (all stages,
shifted windows, padding, the clamp rule, merging, head), the feature pyramid and every golden point must run on
it and equal the NumPy path.
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import swinref
from swinref import backend as backend_mod
from swinref import device as device_mod
from swinref.errors import DeviceError
from swinref.model import features, forward, forward_trace
from swinref.params import init_params

xps = pytest.importorskip("array_api_strict")

# Tiny configs that exercise everything: built at 96x96 (window 3 everywhere) and run on a padded, non-square
# input (44x60: pad at every stage), shifted blocks, axes where torchvision drops the shift (a 2x2 grid in one
# padded 3x3 window), merging with odd grids, and V2's variant choices.
V1 = swinref.SwinConfig(name="tiny-v1", img_size=(96, 96), embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                        window_size=3, num_classes=5)
SIZE = (44, 60)
V2 = V1.replace(version=2, name="tiny-v2", pretrained_window_sizes=(3, 3, 3, 2))
OTHER = xps.Device("device1")


def _strict(tree, dtype):
    return {k: xps.asarray(np.asarray(v, dtype=dtype), device=OTHER) for k, v in tree.items()}


def _to_numpy(a):
    return np.asarray(a.to_device(xps.Device("CPU_DEVICE")))


def _inputs(cfg, dtype, batch=2):
    return np.random.default_rng(0).standard_normal((batch, 3, *SIZE)).astype(dtype)


@pytest.mark.parametrize("cfg", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_whole_forward_on_a_strict_non_default_device_equals_numpy(cfg, dtype):
    params = init_params(cfg, seed=3, dtype=dtype)
    x = _inputs(cfg, dtype)
    want = forward(params, x, cfg)
    got = forward(_strict(params, dtype), xps.asarray(x, device=OTHER), cfg)
    assert got.device == OTHER
    assert got.dtype == getattr(xps, dtype)  # no implicit float64 (nor float32 for float64 models)
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(_to_numpy(got), want, rtol=0, atol=tol * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("padding", ["detection", "timm"])  # pad, then roll; roll, then pad
def test_features_and_every_trace_point_on_strict_device(padding):
    cfg, dtype = V1, "float32"
    params = init_params(cfg, seed=4, dtype=dtype)
    x = _inputs(cfg, dtype, batch=1)
    sp, sx = _strict(params, dtype), xps.asarray(x, device=OTHER)
    for got, want in zip(features(sp, sx, cfg, policy=padding), features(params, x, cfg, policy=padding)):
        assert got.device == OTHER and got.dtype == getattr(xps, dtype)
        np.testing.assert_allclose(_to_numpy(got), want, atol=2e-5)
    blocks = ["layers.0.blocks.1", "layers.3.blocks.0"]
    want = forward_trace(params, x, cfg, policy=padding, attn_probs=blocks)
    got = forward_trace(sp, sx, cfg, policy=padding, attn_probs=blocks)
    assert list(got) == list(want)
    for name in want:
        assert got[name].device == OTHER and got[name].dtype == getattr(xps, dtype), name
        np.testing.assert_allclose(_to_numpy(got[name]), want[name], atol=2e-5, err_msg=name)


def test_mixing_devices_is_refused_not_silently_converted():
    cfg = V1
    params = init_params(cfg, seed=0, dtype="float32")
    x = xps.asarray(_inputs(cfg, "float32", 1), device=OTHER)
    with pytest.raises(swinref.InputError, match="move the input to the parameters' device"):
        forward(params, x, cfg)  # NumPy params with an array on another device


# ------------------------------------------------------------------------------------------------------------
# The per-backend function table.


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-30, 30, allow_nan=False, width=64), min_size=1, max_size=64))
def test_erf_implementations_agree_with_math_erf(values):
    x = np.asarray(values)
    want = np.asarray([math.erf(v) for v in values])
    np.testing.assert_array_equal(backend_mod.erf_reference(x), want)
    np.testing.assert_allclose(backend_mod.numpy_backend().erf(x), want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(backend_mod.erf_series(np, x), want, rtol=0, atol=1e-15)
    strict = backend_mod.erf_series(xps, xps.asarray(x, device=OTHER))
    np.testing.assert_allclose(_to_numpy(strict), want, rtol=0, atol=1e-15)


def test_erf_in_float32_stays_float32_and_accurate():
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    want = np.asarray([math.erf(float(v)) for v in x])
    for got in (backend_mod.numpy_backend().erf(x), backend_mod.erf_series(np, x)):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() < 4e-7


def test_backend_table_picks_the_library_implementation():
    assert backend_mod.numpy_backend().name == "numpy"
    be = backend_mod.backend_for(xps.asarray([1.0], device=OTHER))
    assert be.name == "array_api_strict" and be.device == OTHER


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 5), st.integers(1, 80), st.integers(0, 2**32 - 1))
def test_gather_rows_implementations_agree(rows, cols, k, seed):
    # The relative position bias lookup: advanced indexing on NumPy (and CuPy), the standard take elsewhere.
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((rows, cols))
    index = rng.integers(0, rows, size=k)
    want = np.asarray([table[i] for i in index]).reshape(k, cols)
    np.testing.assert_array_equal(backend_mod.numpy_backend().take_rows(table, index), want)
    strict = backend_mod.backend_for(xps.asarray(table, device=OTHER))
    assert strict.gather_rows is None  # the generic entry: the standard's take
    got = strict.take_rows(xps.asarray(table, device=OTHER), xps.asarray(index, device=OTHER))
    np.testing.assert_array_equal(_to_numpy(got), want)


# ------------------------------------------------------------------------------------------------------------
# Asking for a GPU where there is none: one clear error naming what is missing.


def _fake_cupy(*, count=1, count_error=None, compile_error=None):
    cp = types.SimpleNamespace()

    def get_count():
        if count_error is not None:
            raise count_error
        return count

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def arange(*a, **k):
        if compile_error is not None:
            raise compile_error
        return np.arange(*a, **k)

    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_count), Device=Device)
    cp.arange = arange
    cp.float32 = np.float32
    return cp


@pytest.mark.parametrize(
    "fake,expected",
    [
        (ImportError("No module named 'cupy'"), "needs CuPy, which is not installed"),
        (_fake_cupy(count_error=RuntimeError("cudaErrorInsufficientDriver")), "driver is not usable"),
        (_fake_cupy(count=0), "reports no GPU"),
        (_fake_cupy(compile_error=RuntimeError("nvrtc: libnvrtc.so.12 not found")), "runtime compiler (NVRTC)"),
    ],
    ids=["no-cupy", "no-driver", "no-device", "no-nvrtc"],
)
def test_gpu_request_names_what_is_missing(monkeypatch, fake, expected):
    def importer():
        if isinstance(fake, Exception):
            raise fake
        return fake

    monkeypatch.setattr(device_mod, "_import_cupy", importer)
    with pytest.raises(DeviceError) as info:
        device_mod.resolve_device("cuda")
    message = str(info.value)
    assert expected in message
    assert "pip install" in message or "driver" in message or "--device cpu" in message


def test_gpu_index_out_of_range(monkeypatch):
    monkeypatch.setattr(device_mod, "_import_cupy", lambda: _fake_cupy(count=1))
    with pytest.raises(DeviceError, match=r"only 1 GPU"):
        device_mod.resolve_device("cuda:3")


def test_unknown_device_name():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        device_mod.resolve_device("tpu")


def test_device_detection_never_runs_at_import():
    import subprocess

    code = "import swinref, swinref.api, swinref.model, swinref.device, sys; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_model_on_missing_gpu_raises_device_error(monkeypatch):
    monkeypatch.setattr(device_mod, "_import_cupy", lambda: (_ for _ in ()).throw(ImportError("no cupy")))
    with pytest.raises(DeviceError, match="swinref\\[gpu\\]"):
        swinref.random_model(V1, device="cuda")


# ------------------------------------------------------------------------------------------------------------
# A real GPU: skipped here (no machine of ours has one), run wherever CuPy sees a device.


def _gpu_available() -> bool:
    try:
        device_mod.resolve_device("cuda")
        return True
    except DeviceError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU; none on this machine")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_equals_numpy(dtype):
    import cupy as cp

    cfg = V1
    model_cpu = swinref.random_model(cfg, seed=5, dtype=dtype)
    model_gpu = swinref.random_model(cfg, seed=5, dtype=dtype, device="cuda")
    x = _inputs(cfg, dtype)
    got = model_gpu(cp.asarray(x))
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(got), model_cpu(x), atol=2e-5 if dtype == "float32" else 1e-12)
    for g, c in zip(model_gpu.features(x), model_cpu.features(x)):
        np.testing.assert_allclose(cp.asnumpy(g), c, atol=2e-5 if dtype == "float32" else 1e-12)


def test_model_object_moves_numpy_input_to_its_device_once():
    # The GPU path of swinref.api.Model, exercised with a strict non-default device standing in for CUDA.
    from swinref.api import Model
    from swinref.backend import backend_for

    cfg = V1
    params = init_params(cfg, seed=6, dtype="float32")
    sp = _strict(params, "float32")
    model = Model(config=cfg, params=sp, dtype="float32", device="device1", backend=backend_for(sp["norm.weight"]))
    x = _inputs(cfg, "float32", batch=1)
    got = model(x)  # a NumPy input
    assert got.device == OTHER
    np.testing.assert_allclose(_to_numpy(got), forward(params, x, cfg), atol=2e-5)
    assert all(f.device == OTHER for f in model.features(x))
