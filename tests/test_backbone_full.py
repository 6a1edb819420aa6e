"""Optional: full-size Swin backbones saved by their peers, read by swinref.load without torch.

Each peer's backbone (random weights, tools/peers._randomise) is saved in the peer's own format: mmdet / mmseg /
mmpretrain as mmengine checkpoints ({'meta', 'state_dict'} with the backbone under 'backbone.', written by
mmengine.runner.checkpoint.save_checkpoint), transformers SwinBackbone / Swinv2Backbone with save_pretrained.
swinref.load reads it with no config and its default policy; Model.features(x) must equal every stage output of
the peer (after the peer's output norm): float32 within 1e-4, float64 within 1e-9 (relative to max|output| beyond 1).
Swin-T (V1 and V2) at the build size, 232x176 and 800x1333; Swin-B (V1) at 800x1333.
mmpretrain runs with pad_small_map=True, its setting for dense prediction (the `detection` rule).

Skipped without torch and the peers; run with

    python -m pytest -q -s -m slow tests/test_backbone_full.py
"""

from __future__ import annotations

import functools
import pathlib
import sys
import warnings
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mmengine")

import peers  # noqa: E402  (tools/peers.py)
from openmmlab import import_openmmlab  # noqa: E402  (tools/openmmlab.py)

import swinref  # noqa: E402
from swinref.params import counter_uniform  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BOUND = {"float32": 1e-4, "float64": 1e-9}
BIG = (800, 1333)
T1, B1, T2 = "swin_tiny_patch4_window7_224", "swin_base_patch4_window7_224", "swinv2_tiny_patch4_window8_256"
V1_PEERS = ("mmdet", "mmseg", "mmpretrain", "hf_backbone")
V2_PEERS = ("mmpretrain", "hf_backbone")
PEER_SEEDS = ("mmdet", "mmseg", "mmpretrain", "hf_backbone")


def _sizes(variant: str) -> list[tuple[int, int]]:
    if variant == B1:
        return [BIG]
    return [swinref.get_config(variant).img_size, (232, 176), BIG]


CASES = [(v, p, s) for v, ps in ((T1, V1_PEERS), (T2, V2_PEERS), (B1, V1_PEERS)) for p in ps for s in _sizes(v)]


def _build(peer: str, cfg: swinref.SwinConfig) -> Any:
    """The peer's backbone of `cfg` with every output stage, float32, random weights, eval mode."""
    torch.manual_seed(0)
    n = len(cfg.depths)
    if peer == "hf_backbone":
        import transformers

        common = dict(image_size=cfg.img_size[0], patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                      depths=list(cfg.depths), num_heads=list(cfg.num_heads), window_size=cfg.window_size,
                      mlp_ratio=cfg.mlp_ratio, drop_path_rate=0.0, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, out_features=[f"stage{i + 1}" for i in range(n)])
        if cfg.version == 2:
            net = transformers.Swinv2Backbone(transformers.Swinv2Config(
                pretrained_window_sizes=list(cfg.pretrained_window_sizes), **common))
        else:
            hf_cfg = transformers.SwinConfig(**common)
            hf_cfg._attn_implementation = "sdpa"  # eager takes its softmax in float32 even in float64
            net = transformers.SwinBackbone(hf_cfg)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mm = import_openmmlab()
        if mm is None:
            pytest.skip("OpenMMLab is not importable")
        if peer == "mmpretrain":
            arch = dict(embed_dims=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads))
            kw = dict(img_size=cfg.img_size[0], patch_size=cfg.patch_size, window_size=cfg.window_size,
                      drop_path_rate=0.0, out_indices=tuple(range(n)), pad_small_map=True)
            if cfg.version == 2:
                net = mm.pretrain_v2(arch=dict(arch, extra_norm_every_n_blocks=0),
                                     pretrained_window_sizes=list(cfg.pretrained_window_sizes), **kw)
            else:
                net = mm.pretrain(arch=arch, **kw)
        else:
            cls = mm.det if peer == "mmdet" else mm.seg
            net = cls(pretrain_img_size=cfg.img_size[0], embed_dims=cfg.embed_dim, patch_size=cfg.patch_size,
                      window_size=cfg.window_size, mlp_ratio=int(cfg.mlp_ratio), depths=list(cfg.depths),
                      num_heads=list(cfg.num_heads), strides=(cfg.patch_size,) + (2,) * (n - 1),
                      out_indices=tuple(range(n)), qkv_bias=True, drop_path_rate=0.0)
    peers._randomise(net, seed=3 + PEER_SEEDS.index(peer))  # each peer its own weights
    net.eval()
    return net


def _save(peer: str, net: Any, where: pathlib.Path) -> pathlib.Path:
    if peer == "hf_backbone":
        net.save_pretrained(str(where / "hf"))
        return where / "hf"
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint, weights_to_cpu

    whole = torch.nn.Module()
    whole.backbone = net
    path = where / f"{peer}.pth"
    save_checkpoint({"meta": {"epoch": 1}, "state_dict": weights_to_cpu(get_state_dict(whole))}, str(path))
    return path


@functools.lru_cache(maxsize=None)
def _saved(variant: str, peer: str) -> tuple[Any, pathlib.Path]:
    import tempfile

    net = _build(peer, swinref.get_config(variant))
    where = pathlib.Path(tempfile.mkdtemp(prefix=f"swinref-backbone-{peer}-"))
    return net, _save(peer, net, where)


def _peer_outputs(net: Any, peer: str, x: np.ndarray) -> list[np.ndarray]:
    torch.set_num_threads(1)
    if x.dtype == np.float64:
        import copy

        net = copy.deepcopy(net).double()
        peers.exact_v2_coords(net)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = net(torch.from_numpy(x))
    if peer == "hf_backbone":
        out = out.feature_maps
    return [o.numpy() for o in out]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant,peer,size", CASES, ids=[f"{v.split('_patch')[0]}-{p}-{s[0]}x{s[1]}" for v, p, s in CASES])
def test_backbone_outputs_match_peer(variant: str, peer: str, size: tuple[int, int], dtype: str) -> None:
    net, path = _saved(variant, peer)
    H, W = size
    x = counter_uniform(f"input:{H}x{W}", 3 * H * W).reshape(1, 3, H, W).astype(dtype)
    want = _peer_outputs(net, peer, x)
    model = swinref.load(path, dtype=dtype)
    got = [np.asarray(o) for o in model.features(x)]
    assert len(got) == len(want)
    errs = []
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}: swinref {g.shape} != {peer} {w.shape}"
        err, scale = float(np.abs(g - w).max()), max(1.0, float(np.abs(w).max()))
        errs.append(err / scale)
        assert err <= BOUND[dtype] * scale, f"output {i}: max |swinref - {peer}| {err:.3g} (scale {scale:.3g})"
    print(f"\n{variant} {peer} {H}x{W} {dtype} policy={model.policy} layout={model.report.layout}: "
          f"max scaled error {max(errs):.3g}")
