"""Build the peer implementations (timm, transformers, torchvision) of a Swin config with random weights and save
them in their own checkpoint formats. Used by the optional full-size tests and by tools/parity_report.py.

Needs torch, timm, transformers and torchvision; swinref itself never imports this module.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from swinref.config import SwinConfig

PEERS = ("timm", "transformers", "torchvision")
PADDING = {"timm": "timm", "transformers": "hf", "torchvision": "torchvision"}  # the window policy of each peer


def _randomise(model: Any, seed: int) -> None:
    """Every parameter non-trivial: default inits leave LayerNorm at 1/0 and bias tables near 0, hiding bugs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):  # V2's temperature: around its init log(10), some heads clamped
                p.copy_(np.log(10.0) + 1.5 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 or "relative_position_bias_table" in name:
                base = 1.0 if (name.endswith("weight") and p.ndim == 1) else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))


def build(peer: str, cfg: SwinConfig, seed: int = 0, randomise: bool = True) -> Any:
    """An eval-mode peer model of `cfg` with random weights (randomise=False: the peer's own init, for a caller that
    loads a state dict next and should not pay for drawing ~100M numbers, e.g. a cold-start measurement)."""
    import torch

    torch.manual_seed(seed)
    if cfg.version == 2:
        model = _build_v2(peer, cfg)
    elif peer == "timm":
        from timm.models.swin_transformer import SwinTransformer

        model = SwinTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                depths=cfg.depths, num_heads=cfg.num_heads, window_size=cfg.window_size,
                                num_classes=cfg.num_classes, mlp_ratio=cfg.mlp_ratio)
    elif peer == "transformers":
        import transformers

        hf_cfg = transformers.SwinConfig(image_size=list(cfg.img_size), patch_size=cfg.patch_size,
                                         embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                                         num_heads=list(cfg.num_heads), window_size=cfg.window_size,
                                         mlp_ratio=cfg.mlp_ratio, num_labels=cfg.num_classes,
                                         drop_path_rate=0.0, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
        model = transformers.SwinForImageClassification(hf_cfg)
        # HF's eager attention takes its softmax in float32 even in a float64 model (2.7e-8 off in float64);
        # sdpa keeps the input dtype, so float64 comparisons are meaningful.
        model.config._attn_implementation = "sdpa"
    elif peer == "torchvision":
        from torchvision.models.swin_transformer import SwinTransformer

        model = SwinTransformer(patch_size=[cfg.patch_size] * 2, embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                                num_heads=list(cfg.num_heads), window_size=[cfg.window_size] * 2,
                                num_classes=cfg.num_classes, stochastic_depth_prob=0.0)
    else:
        raise ValueError(f"unknown peer {peer!r}; choose one of {PEERS}")
    if randomise:
        _randomise(model, seed)
    return model.eval()


def _build_v2(peer: str, cfg: SwinConfig) -> Any:
    """Swin V2 peers: timm SwinTransformerV2, transformers Swinv2ForImageClassification, torchvision swin_v2.

    torchvision has no pretrained window sizes (it always normalises the coordinates by its own window).
    """
    if peer == "timm":
        from timm.models.swin_transformer_v2 import SwinTransformerV2

        return SwinTransformerV2(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                 depths=cfg.depths, num_heads=cfg.num_heads, window_size=cfg.window_size,
                                 num_classes=cfg.num_classes, mlp_ratio=cfg.mlp_ratio,
                                 pretrained_window_sizes=cfg.pretrained_window_sizes)
    if peer == "transformers":
        import transformers

        hf_cfg = transformers.Swinv2Config(image_size=list(cfg.img_size), patch_size=cfg.patch_size,
                                           embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                                           num_heads=list(cfg.num_heads), window_size=cfg.window_size,
                                           pretrained_window_sizes=list(cfg.pretrained_window_sizes),
                                           mlp_ratio=cfg.mlp_ratio, num_labels=cfg.num_classes,
                                           drop_path_rate=0.0, hidden_dropout_prob=0.0,
                                           attention_probs_dropout_prob=0.0)
        return transformers.Swinv2ForImageClassification(hf_cfg)
    if peer == "torchvision":
        from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

        if any(cfg.pretrained_window_sizes):
            raise ValueError("torchvision's Swin V2 has no pretrained window sizes")
        return SwinTransformer(patch_size=[cfg.patch_size] * 2, embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                               num_heads=list(cfg.num_heads), window_size=[cfg.window_size] * 2,
                               num_classes=cfg.num_classes, stochastic_depth_prob=0.0,
                               block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    raise ValueError(f"unknown peer {peer!r}; choose one of {PEERS}")


def exact_v2_coords(model: Any) -> None:
    """Recompute every V2 coordinate table in float64 with the peers' own formula.

    All three peers build relative_coords_table in float32 and cast it, so a `.double()` model carries
    float32-rounded coordinates (~1e-8 in the logits); swinref computes it in float64. Harness only.
    """
    import math

    import torch

    for m in model.modules():
        table = getattr(m, "relative_coords_table", None)
        if table is None or not hasattr(m, "window_size"):
            continue
        ws = tuple(m.window_size) if not isinstance(m.window_size, int) else (m.window_size,) * 2
        pws = tuple(getattr(m, "pretrained_window_size", (0, 0)))
        ref = pws if pws[0] > 0 else ws
        axes = [torch.arange(-(w - 1), w, dtype=torch.float64) for w in ws]
        t = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1)
        for k in range(2):
            if ref[k] > 1:
                t[..., k] /= ref[k] - 1
        t = t * 8
        t = torch.sign(t) * torch.log2(torch.abs(t) + 1.0) / math.log2(8)
        m.relative_coords_table = t.reshape(table.shape).to(table.dtype)


def save(peer: str, model: Any, directory: pathlib.Path) -> pathlib.Path:
    """Write the model as its library does; returns the path swinref.load takes."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    if peer == "transformers":
        model.save_pretrained(directory)
        return directory
    path = directory / "model.pth"
    torch.save(model.state_dict(), path)
    return path


def run(peer: str, model: Any, x: np.ndarray) -> np.ndarray:
    """Logits of the peer on a NumPy batch, in the batch's dtype."""
    import torch

    model = model.double() if x.dtype == np.float64 else model.float()
    if x.dtype == np.float64:
        exact_v2_coords(model)  # a no-op for V1 models
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    if hasattr(out, "logits"):
        out = out.logits
    return out.numpy()
