"""Write the small peer fixtures in tests/data/peers/ by running the real peer libraries.

Run with the peers environment (torch, timm, transformers, torchvision):

    /work/venv-peers/bin/python tools/make_peer_fixtures.py [--out tests/data/peers]

Every case is a directory with `meta.json` (peer versions, constructor arguments, the equivalent swinref config,
the peer's padding behaviour), the checkpoint exactly as that peer writes it, and `io.npz` (input, logits, the
per-stage feature pyramid and, where the peer makes it easy, named intermediate points). Deterministic: fixed
torch seeds, single thread. The files are never edited by hand: rerun this script instead.

Weights are random but not trivial: PyTorch's default inits leave LayerNorm weights at one, biases and the
relative position bias tables at zero (or near it), which would hide a wrong norm, a missing bias or a transposed
bias index. Every parameter is redrawn here from a seeded normal distribution with a scale that keeps activations
near unit size, so attention logits spread and every term matters.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

B = 2  # batch of every fixture input
ORDERS_NOTE = (
    "pad-then-roll and roll-then-pad give identical results on an axis whose window padding is 0 or equal to the "
    "shift (the padded tokens then form their own mask region); the sizes here give every shifted stage an axis "
    "with another padding, so a model using the wrong order fails on these fixtures."
)
LEGACY_NOTE = (
    "hf_legacy/ was written by this script by renaming the keys transformers 5.23 saves back to the names older "
    "transformers releases (and the Hub checkpoints) use, plus the [N, N] relative_position_index buffer those "
    "releases saved; it was not written by an old transformers release."
)


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers


def versions() -> dict:
    import timm
    import torchvision
    import transformers

    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "transformers": transformers.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter from a seeded normal so no term of the forward pass is trivially zero or one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith("relative_position_bias_table"):
                value = 0.5 * noise  # comparable to q.k/sqrt(d), so a wrong index changes the output
            elif p.ndim == 1 and name.endswith("weight"):
                value = 1.0 + 0.2 * noise  # LayerNorm gains around one
            elif p.ndim == 1:
                value = 0.1 * noise  # biases
            else:
                fan_in = int(np.prod(p.shape[1:]))
                value = noise / np.sqrt(fan_in)  # Linear [out, in], Conv [out, in, k, k]
            p.copy_(value.to(p.dtype))


def make_input(seed: int, hw: tuple[int, int], dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((B, 3, *hw), generator=gen, dtype=torch.float64).to(dtype)


def to_np(t: torch.Tensor) -> np.ndarray:
    # float64 stays float64 (io64.npz); float32 stays float32.
    return t.detach().cpu().contiguous().numpy()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **arrays)


def stage_level(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The secondary io files keep input, logits, pyramid, patch embedding, merges, norm, pooled (not per block)."""
    return {k: v for k, v in arrays.items() if ".blocks." not in k}


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def shapes_of(arrays: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in arrays.items()}


def swinref_config(*, img_size, patch_size, embed_dim, depths, num_heads, window_size, num_classes, mlp_ratio):
    return {
        "version": 1,
        "img_size": list(img_size),
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "depths": list(depths),
        "num_heads": list(num_heads),
        "window_size": window_size,
        "num_classes": num_classes,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": True,
        "patch_norm": True,
        "layer_norm_eps": 1e-5,
    }


def stage_grids(hw: tuple[int, int], patch: int, n_stages: int) -> list[list[int]]:
    """Token grid of every stage: patch grid, then ceil-halved by each merge (peers zero-pad odd sizes)."""
    h, w = hw[0] // patch, hw[1] // patch
    out = []
    for _ in range(n_stages):
        out.append([h, w])
        h, w = (h + 1) // 2, (w + 1) // 2
    return out


# ---------------------------------------------------------------------------------------------------------------
# timm


def timm_model(kwargs: dict, seed: int):
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(seed)
    model = SwinTransformer(**kwargs)
    randomize_(model, seed)
    return model.eval()


def timm_block_windows(model) -> list[dict]:
    """Window and shift the timm model built for each block (after its build-time clamp)."""
    out = []
    for i, stage in enumerate(model.layers):
        for j, blk in enumerate(stage.blocks):
            out.append({"block": f"layers.{i}.blocks.{j}", "input_resolution": list(blk.input_resolution),
                        "window_size": list(blk.window_size), "shift_size": list(blk.shift_size)})
    return out


def timm_run(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Logits, the NCHW stage pyramid and the named intermediate points of a timm SwinTransformer."""
    points: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name):
        def hook(_m, _inp, out):
            points[name] = out.detach().clone()
        return hook

    def keep_attn(name):
        # The attention branch before the residual add: rerun the block's own _attn on norm1 of the block input.
        def hook(m, inp, _out):
            with torch.no_grad():
                points[name] = m._attn(m.norm1(inp[0])).detach().clone()
        return hook

    handles.append(model.patch_embed.register_forward_hook(keep("patch_embed")))
    for i, stage in enumerate(model.layers):
        if i > 0:
            # timm merges at the START of stage i; in official numbering that merge follows stage i-1.
            handles.append(stage.downsample.register_forward_hook(keep(f"layers.{i - 1}.downsample")))
        for j, blk in enumerate(stage.blocks):
            handles.append(blk.register_forward_hook(keep(f"layers.{i}.blocks.{j}")))
            handles.append(blk.register_forward_hook(keep_attn(f"layers.{i}.blocks.{j}.attn")))
    handles.append(model.norm.register_forward_hook(keep("norm")))
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)  # NCHW, before the next merge
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    for h in handles:
        h.remove()
    arrays = {"input": to_np(x), "logits": to_np(logits)}
    for i, f in enumerate(feats):
        arrays[f"features.{i}"] = to_np(f)
    arrays.update({k: to_np(v) for k, v in points.items()})
    arrays["pooled"] = to_np(pooled)
    return arrays


def timm_to_official(model, cfg) -> dict[str, torch.Tensor]:
    """The timm weights under the official repository's names, with the buffers the official model saves.

    Official differences (microsoft/Swin-Transformer models/swin_transformer.py): the merge is the
    `downsample` at the END of stage i (timm: start of stage i+1), the classifier is `head` (timm: `head.fc`),
    `attn.relative_position_index` [N, N] int64 is a persistent buffer of every block, and `attn_mask` [nW, N, N]
    float32 is a persistent buffer of every block whose shift survived the clamp (it is None otherwise and then
    not saved). In state_dict order a module's own buffers come before its children, so a block's attn_mask
    comes first and a WindowAttention's index follows its bias table.
    """
    from swinref.checkpoints.layouts import timm as timm_layout
    from swinref.layout import param_shapes

    params, _ = timm_layout.to_canonical(model.state_dict())  # renames only: the torch tensors themselves
    out: dict[str, torch.Tensor] = {}
    for name in param_shapes(cfg):  # the official order
        block = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", name)
        blk = model.layers[int(block[1])].blocks[int(block[2])] if block else None
        if blk is not None and name == block[0] + "norm1.weight" and blk.attn_mask is not None:
            # timm builds the same mask as official when the stage divides by the window (it does here).
            out[block[0] + "attn_mask"] = blk.attn_mask.detach().to(torch.float32).clone()
        out[name] = params[name].clone()
        if blk is not None and name == block[0] + "attn.relative_position_bias_table":
            out[block[0] + "attn.relative_position_index"] = (
                blk.attn.relative_position_index.detach().to(torch.int64).clone())
    return out


def check_official(path: Path, model, kwargs: dict, cfg, x: torch.Tensor, notes: list[str]) -> None:
    """Load official.pth back through timm's own converter (checkpoint_filter_fn) and compare logits."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    fresh = timm_model(kwargs, seed=12345)  # different weights, overwritten by the load
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    fresh.load_state_dict(checkpoint_filter_fn(ckpt, fresh), strict=True)
    with torch.no_grad():
        diff = (fresh.eval()(x) - model(x)).abs().max().item()
    if diff != 0.0:
        raise SystemExit(f"official.pth does not reproduce the timm logits through checkpoint_filter_fn (max {diff})")
    notes.append("official.pth loads into timm through timm's checkpoint_filter_fn and reproduces the logits exactly.")
    # Cross-check against swinref's canonical layout; a mismatch is reported, not fatal.
    from swinref.layout import param_shapes

    want = param_shapes(cfg)
    got = {k: tuple(v.shape) for k, v in ckpt["model"].items()
           if not k.endswith(("relative_position_index", "attn_mask"))}
    if want == got and list(want) == list(got):
        notes.append("official.pth parameter names, shapes and order equal swinref.layout.param_shapes(cfg).")
    else:
        print(f"  WARNING: swinref.layout.param_shapes disagrees with official.pth: "
              f"missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}, "
              f"shape diffs {[k for k in want if k in got and want[k] != got[k]]}", file=sys.stderr)


def case_timm(out: Path, name: str, *, kwargs: dict, hw: tuple[int, int], seed: int, with_official: bool,
              with_f64: bool, padding: str, surprises: list[str]) -> None:
    case = out / name
    case.mkdir(parents=True)
    config = swinref_config(
        img_size=kwargs["img_size"], patch_size=kwargs["patch_size"], embed_dim=kwargs["embed_dim"],
        depths=kwargs["depths"], num_heads=kwargs["num_heads"], window_size=kwargs["window_size"],
        num_classes=kwargs["num_classes"], mlp_ratio=kwargs["mlp_ratio"])
    model = timm_model(kwargs, seed)
    x = make_input(seed + 1, hw)
    arrays = timm_run(model, x)
    write_npz(case / "io.npz", arrays)
    torch.save(model.state_dict(), case / "model.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(case / "model.safetensors"))
    files = ["model.pth", "model.safetensors"]
    notes = list(surprises)
    if with_official:
        from swinref.config import SwinConfig

        cfg = SwinConfig.from_dict(config)
        torch.save({"model": timm_to_official(model, cfg)}, case / "official.pth")
        files.append("official.pth")
        check_official(case / "official.pth", model, kwargs, cfg, x, notes)
    io_files = {"io.npz": {"dtype": "float32", "arrays": shapes_of(arrays)}}
    if with_f64:
        m64 = timm_model(kwargs, seed).double()
        a64 = stage_level(timm_run(m64, x.double()))
        write_npz(case / "io64.npz", a64)
        io_files["io64.npz"] = {"dtype": "float64", "arrays": shapes_of(a64),
                                "max_abs_diff_logits_vs_float32": float(np.abs(a64["logits"] - arrays["logits"]).max())}
    meta = {
        "case": name,
        "peer": "timm",
        "class": "timm.models.swin_transformer.SwinTransformer",
        "versions": versions(),
        "constructor": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        "swinref_config": config,
        "input_shape": [B, 3, *hw],
        "dtype": "float32",
        "stage_grids": stage_grids(hw, kwargs["patch_size"], len(kwargs["depths"])),
        "blocks": timm_block_windows(model),
        "padding": padding,
        "attention": "eager (timm's fused_attn is off for Swin unless TIMM_FUSED_ATTN=2)" if not model.layers[0].blocks[0].attn.fused_attn else "fused sdpa",
        "checkpoint_files": files,
        "checkpoint_keys": "timm names: merges at layers.{1,2,3}.downsample (start of the stage), classifier head.fc.*; "
                           "relative_position_index and attn_mask are non-persistent and not saved",
        "io_files": io_files,
        "points": "features.{i}: NCHW stage output before the following merge (forward_intermediates); "
                  "patch_embed, layers.{i}.blocks.{j}, layers.{i}.blocks.{j}.attn (attention branch before the residual "
                  "add, from the block's own _attn on norm1 of its input), layers.{i}.downsample (the merge that follows "
                  "stage i, timm's layers.{i+1}.downsample), norm: NHWC; pooled [B, C_L] (forward_head pre_logits)",
        "seeds": {"weights": seed, "input": seed + 1},
        "notes": notes,
    }
    write_json(case / "meta.json", meta)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face transformers


def hf_model(cfg_kwargs: dict, seed: int, attn: str):
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(seed)
    config = SwinConfig(**cfg_kwargs)
    model = SwinForImageClassification(config)
    randomize_(model, seed)
    model.config._attn_implementation = attn
    return model.eval()


def hf_run(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    points: dict[str, torch.Tensor] = {}
    handles = []
    swin = model.swin

    def keep_tokens(name, dims_of):
        def hook(_m, inp, out):
            t = out[0] if isinstance(out, tuple) else out
            h, w = dims_of(inp, out)
            points[name] = t.detach().reshape(t.shape[0], h, w, t.shape[-1]).clone()
        return hook

    handles.append(swin.embeddings.register_forward_hook(
        keep_tokens("patch_embed", lambda inp, out: out[1])))
    for i, stage in enumerate(swin.encoder.layers):
        for j, blk in enumerate(stage.blocks):
            handles.append(blk.register_forward_hook(
                keep_tokens(f"layers.{i}.blocks.{j}", lambda inp, out: inp[1])))
        if stage.downsample is not None:
            handles.append(stage.downsample.register_forward_hook(
                keep_tokens(f"layers.{i}.downsample", lambda inp, out: ((inp[1][0] + 1) // 2, (inp[1][1] + 1) // 2))))
    with torch.no_grad():
        res = model(x, output_hidden_states=True, output_hidden_states_before_downsampling=True)
        n_tokens = res.reshaped_hidden_states[-1].shape
        last_hw = n_tokens[2], n_tokens[3]
        base = swin(x)
    for h in handles:
        h.remove()
    arrays = {"input": to_np(x), "logits": to_np(res.logits)}
    # reshaped_hidden_states = (patch embedding, stage 0 before merging, ..., last stage), NCHW.
    for i, f in enumerate(res.reshaped_hidden_states[1:]):
        arrays[f"features.{i}"] = to_np(f)
    arrays.update({k: to_np(v) for k, v in points.items()})
    lh = base.last_hidden_state  # after swin.layernorm, [B, L, C]
    arrays["norm"] = to_np(lh.reshape(lh.shape[0], *last_hw, lh.shape[-1]))
    arrays["pooled"] = to_np(base.pooler_output)
    return arrays


def hf_legacy_state(model) -> dict[str, torch.Tensor]:
    from swinref.checkpoints.layouts.transformers import LEGACY_RENAMES

    out = {}
    for k, v in model.state_dict().items():
        new = k
        for a, b in LEGACY_RENAMES:
            new = new.replace(a, b)
        out[new] = v.clone()
    # Older releases also saved the [N, N] index buffer of every attention block.
    for i, stage in enumerate(model.swin.encoder.layers):
        for j, blk in enumerate(stage.blocks):
            rpb = blk.attention.relative_position_bias
            n = rpb.window_area
            out[f"swin.encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index"] = (
                rpb.relative_position_index.detach().reshape(n, n).to(torch.int64).clone())
    return out


def hf_reference_probes() -> dict[str, str]:
    """REFERENCE.md says transformers 5.23 fails at 232x176, 231x177 and 256x256: try them on a random Swin-T."""
    from transformers import SwinConfig, SwinForImageClassification

    def run(m, size):
        try:
            with torch.no_grad():
                m(torch.zeros(1, 3, *size))
            return "ok"
        except Exception as e:
            return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"

    def fresh(attn):
        torch.manual_seed(0)
        return SwinForImageClassification(SwinConfig(attn_implementation=attn)).eval()  # Swin-T, 224, window 7

    out = {}
    for attn in ("eager", "sdpa"):
        for size in ((224, 224), (232, 176), (231, 177), (256, 256)):
            out[f"swin-t {attn}, fresh model, {size[0]}x{size[1]}"] = run(fresh(attn), size)
    # The same model object, sizes in sequence: the run-time clamp is written into the layers.
    m = fresh("eager")
    for size in ((232, 176), (256, 256), (224, 224)):
        out[f"swin-t eager, one model after the previous lines, {size[0]}x{size[1]}"] = run(m, size)
    return out


def case_hf(out: Path, name: str, *, cfg_kwargs: dict, hw: tuple[int, int], seed: int, probe_sizes, notes,
            reference_probes):
    from transformers import SwinForImageClassification

    case = out / name
    case.mkdir(parents=True)
    notes = list(notes)
    model = hf_model(cfg_kwargs, seed, "eager")
    model.save_pretrained(case / "hf")
    saved = sorted(__import__("safetensors.torch", fromlist=["load_file"]).load_file(
        str(case / "hf" / "model.safetensors")))
    new_names = any(".attention.q_proj." in k for k in saved)
    files = ["hf/config.json", "hf/model.safetensors"]
    if new_names:
        (case / "hf_legacy").mkdir()
        shutil.copy(case / "hf" / "config.json", case / "hf_legacy" / "config.json")
        torch.save(hf_legacy_state(model), case / "hf_legacy" / "pytorch_model.bin")
        files += ["hf_legacy/config.json", "hf_legacy/pytorch_model.bin"]
        notes.append(LEGACY_NOTE)
        # transformers maps the legacy names on load: check it reproduces the weights exactly.
        back = SwinForImageClassification.from_pretrained(case / "hf_legacy").eval()
        same = all(torch.equal(a, back.state_dict()[k]) for k, a in model.state_dict().items())
        if not same:
            raise SystemExit("hf_legacy/pytorch_model.bin does not load back to the same weights")
        notes.append("hf_legacy/ loads back with SwinForImageClassification.from_pretrained to identical weights.")
    io_files = {}
    size_cfg = tuple(cfg_kwargs["image_size"])
    for fname, size in (("io.npz", hw), ("io_cfg.npz", size_cfg)):
        # A fresh model per size: SwinLayer.set_shift_and_window_size mutates the layer (see notes).
        m = SwinForImageClassification.from_pretrained(case / "hf", attn_implementation="eager").eval()
        x = make_input(seed + 1, size)
        a = hf_run(m, x)
        if fname != "io.npz":
            a = stage_level(a)
        write_npz(case / fname, a)
        io_files[fname] = {"dtype": "float32", "input_shape": [B, 3, *size], "attention": "eager",
                           "stage_grids": stage_grids(size, cfg_kwargs["patch_size"], len(cfg_kwargs["depths"])),
                           "arrays": shapes_of(a)}
        if fname == "io.npz":
            ref32 = a
    # float64: eager attention computes its softmax in float32 even for float64 inputs, so use sdpa here.
    m64 = SwinForImageClassification.from_pretrained(case / "hf", attn_implementation="sdpa").eval().double()
    x = make_input(seed + 1, hw, torch.float64)
    a64 = stage_level(hf_run(m64, x))
    write_npz(case / "io64.npz", a64)
    me = SwinForImageClassification.from_pretrained(case / "hf", attn_implementation="eager").eval().double()
    with torch.no_grad():
        eager64 = me(x).logits
    io_files["io64.npz"] = {
        "dtype": "float64", "input_shape": [B, 3, *hw], "attention": "sdpa",
        "arrays": shapes_of(a64),
        "max_abs_diff_logits_vs_float32": float(np.abs(a64["logits"] - ref32["logits"]).max()),
        "max_abs_diff_logits_eager_float64_vs_sdpa_float64": float((eager64 - torch.from_numpy(a64["logits"])).abs().max()),
    }
    probes = {}
    for size in probe_sizes:
        m = SwinForImageClassification.from_pretrained(case / "hf").eval()
        try:
            with torch.no_grad():
                m(make_input(0, size))
            probes["x".join(map(str, size))] = "ok"
        except Exception as e:  # record what the peer does, whatever it is
            probes["x".join(map(str, size))] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    meta = {
        "case": name,
        "peer": "transformers",
        "class": "transformers.SwinForImageClassification",
        "versions": versions(),
        "constructor": {"SwinConfig": cfg_kwargs},
        "swinref_config": swinref_config(
            img_size=cfg_kwargs["image_size"], patch_size=cfg_kwargs["patch_size"], embed_dim=cfg_kwargs["embed_dim"],
            depths=cfg_kwargs["depths"], num_heads=cfg_kwargs["num_heads"], window_size=cfg_kwargs["window_size"],
            num_classes=cfg_kwargs["num_labels"], mlp_ratio=cfg_kwargs["mlp_ratio"]),
        "input_shape": [B, 3, *hw],
        "dtype": "float32",
        "padding": "pad-then-roll: zero-pad right/bottom to a multiple of the window (after norm1), roll the padded "
                   "map, shift mask built on the padded size, reverse, unroll, crop; padded tokens are not masked. "
                   "Window clamp at run time: if min(stage grid) <= window, window = min(grid) and shift 0.",
        "checkpoint_files": files,
        "checkpoint_keys": ("transformers 5.23 save_pretrained writes the NEW names (attention.q_proj/k_proj/v_proj/"
                            "o_proj, attention.relative_position_bias.relative_position_bias_table, mlp.fc1/fc2)"
                            if new_names else
                            "transformers 5.23 keeps q_proj/k_proj/v_proj/o_proj, relative_position_bias."
                            "relative_position_bias_table and mlp.fc1/fc2 in memory but save_pretrained writes the "
                            "LEGACY names (attention.self.{query,key,value,relative_position_bias_table}, "
                            "attention.output.dense, intermediate.dense, output.dense), so no hf_legacy/ is needed; "
                            "relative_position_index is not saved (non-persistent)"),
        "saved_keys_sample": [k for k in saved if ".layers.0.blocks.0." in k],
        "io_files": io_files,
        "points": "features.{i}: NCHW stage output before merging (reshaped_hidden_states with "
                  "output_hidden_states_before_downsampling=True); patch_embed, layers.{i}.blocks.{j}, "
                  "layers.{i}.downsample, norm: NHWC from hooks / last_hidden_state; pooled: pooler_output. "
                  "No .attn points (the attention branch is inline in SwinLayer.forward).",
        "size_probes_eager_float32": probes,
        "reference_md_size_probes": reference_probes,
        "seeds": {"weights": seed, "input": seed + 1},
        "notes": notes,
    }
    write_json(case / "meta.json", meta)


# ---------------------------------------------------------------------------------------------------------------
# torchvision


def case_tv(out: Path, name: str, *, kwargs: dict, hw: tuple[int, int], seed: int, notes):
    from torchvision.models.swin_transformer import SwinTransformer

    case = out / name
    case.mkdir(parents=True)
    torch.manual_seed(seed)
    model = SwinTransformer(**kwargs)
    randomize_(model, seed)
    model.eval()
    x = make_input(seed + 1, hw)
    points: dict[str, torch.Tensor] = {}
    handles = []

    def keep(n):
        def hook(_m, _inp, o):
            points[n] = o.detach().clone()
        return hook

    n_stages = len(kwargs["depths"])
    handles.append(model.features[0].register_forward_hook(keep("patch_embed")))
    for i in range(n_stages):
        stage = model.features[2 * i + 1]
        handles.append(stage.register_forward_hook(keep(f"_stage.{i}")))
        for j, blk in enumerate(stage):
            handles.append(blk.register_forward_hook(keep(f"layers.{i}.blocks.{j}")))
            handles.append(blk.attn.register_forward_hook(keep(f"layers.{i}.blocks.{j}.attn")))
        if i + 1 < n_stages:
            handles.append(model.features[2 * i + 2].register_forward_hook(keep(f"layers.{i}.downsample")))
    handles.append(model.norm.register_forward_hook(keep("norm")))
    handles.append(model.flatten.register_forward_hook(keep("pooled")))
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    arrays = {"input": to_np(x), "logits": to_np(logits)}
    for i in range(n_stages):
        arrays[f"features.{i}"] = to_np(points.pop(f"_stage.{i}").permute(0, 3, 1, 2))
    arrays.update({k: to_np(v) for k, v in points.items()})
    write_npz(case / "io.npz", arrays)
    torch.save(model.state_dict(), case / "model.pth")
    meta = {
        "case": name,
        "peer": "torchvision",
        "class": "torchvision.models.swin_transformer.SwinTransformer",
        "versions": versions(),
        "constructor": kwargs,
        "swinref_config": swinref_config(
            img_size=hw, patch_size=kwargs["patch_size"][0], embed_dim=kwargs["embed_dim"], depths=kwargs["depths"],
            num_heads=kwargs["num_heads"], window_size=kwargs["window_size"][0], num_classes=kwargs["num_classes"],
            mlp_ratio=kwargs["mlp_ratio"]),
        "input_shape": [B, 3, *hw],
        "dtype": "float32",
        "stage_grids": stage_grids(hw, kwargs["patch_size"][0], n_stages),
        "padding": "pad-then-roll (inside shifted_window_attention: zero-pad right/bottom, roll, mask built on the "
                   "padded size, reverse, unroll, crop); the window never shrinks; shift is switched off per axis when "
                   "window >= padded size of that axis; padded tokens are not masked.",
        "checkpoint_files": ["model.pth"],
        "checkpoint_keys": "features.0.{0 conv, 2 LayerNorm}; stages features.{1,3,5}.j.{norm1, attn.qkv, attn.proj, "
                           "attn.relative_position_bias_table, attn.relative_position_index (flat [N*N] int64, "
                           "persistent), norm2, mlp.0, mlp.3}; merges features.{2,4}.{reduction, norm}; norm; head",
        "io_files": {"io.npz": {"dtype": "float32", "arrays": shapes_of(arrays)}},
        "points": "features.{i}: stage output (features[2i+1]) permuted to NCHW; patch_embed, layers.{i}.blocks.{j}, "
                  "layers.{i}.blocks.{j}.attn (ShiftedWindowAttention output, before the residual add), "
                  "layers.{i}.downsample (features[2i+2]), norm: NHWC; pooled: after avgpool+flatten",
        "seeds": {"weights": seed, "input": seed + 1},
        "notes": list(notes),
    }
    write_json(case / "meta.json", meta)


# ---------------------------------------------------------------------------------------------------------------


def timm_size_probes() -> list[str]:
    """What timm 1.0.31 needs for sizes other than the built one (recorded in timm_v1_pad/meta.json)."""
    from timm.models.swin_transformer import SwinTransformer

    base = dict(patch_size=4, window_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4), num_classes=10,
                drop_path_rate=0.0)
    out = []
    for label, kw, size in (
        ("built at 84x68, strict (default)", dict(img_size=(84, 68)), (84, 68)),
        ("built at 64x64, strict, run at 84x68", dict(img_size=64), (84, 68)),
        ("built at 64x64, dynamic_img_size=True, run at 84x68", dict(img_size=64, dynamic_img_size=True), (84, 68)),
        ("built at 64x64, strict_img_size=False, run at 84x68", dict(img_size=64, strict_img_size=False), (84, 68)),
        ("built at 64x64, dynamic_img_size=True, run at 90x70 (not a multiple of the patch)",
         dict(img_size=64, dynamic_img_size=True), (90, 70)),
    ):
        torch.manual_seed(0)
        m = SwinTransformer(**base, **kw).eval()
        try:
            with torch.no_grad():
                m(torch.zeros(1, 3, *size))
            out.append(f"{label}: ok")
        except Exception as e:
            out.append(f"{label}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "peers")
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)  # never leave stale cases behind
    out.mkdir(parents=True)

    # 1. timm, square, divisible: stage grids 16, 8, 4, 2 with window 4 exercise the shift mask (stages 0, 1),
    #    the clamp to an equal window without shift (stage 2) and to a smaller window (stage 3: window 2).
    case_timm(out, "timm_v1_clamp", kwargs=dict(
        img_size=(64, 64), patch_size=4, in_chans=3, num_classes=10, embed_dim=8, depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4), window_size=4, mlp_ratio=2.0, qkv_bias=True, drop_rate=0.0, proj_drop_rate=0.0,
        attn_drop_rate=0.0, drop_path_rate=0.0), hw=(64, 64), seed=101, with_official=True, with_f64=True,
        padding="roll-then-pad (no padding needed at this size: every stage divides by its window)",
        surprises=["timm clamps per axis at build time: window_h = min(res_h, M) and shift_h = 0 when res_h <= M "
                   "(likewise for w); for square grids this equals the official rule."])

    # 2. timm at a size the window does not divide in any of the three stages: grids 21x17, 11x9, 6x5. Every
    #    shifted stage has an axis whose padding is neither 0 nor the shift 2: there the two orders differ.
    case_timm(out, "timm_v1_pad", kwargs=dict(
        img_size=(84, 68), patch_size=4, in_chans=3, num_classes=10, embed_dim=8, depths=(2, 2, 2),
        num_heads=(1, 2, 4), window_size=4, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, proj_drop_rate=0.0,
        attn_drop_rate=0.0, drop_path_rate=0.0), hw=(84, 68), seed=202, with_official=False, with_f64=False,
        padding="roll-then-pad: roll the unpadded map by (-s, -s), zero-pad right/bottom to a multiple of the "
                "window, partition; the shift mask is built on the PADDED size (the 9 regions are cut from the end "
                "of the padded map); reverse, crop, unroll. Padded tokens are not masked.",
        surprises=[ORDERS_NOTE, "timm builds its windows, shifts and masks for img_size at construction: built at the size it "
                   "runs at, it needs no option. To run other sizes it needs dynamic_img_size=True (or "
                   "strict_img_size=False): masks are then rebuilt per forward, but window/shift keep the build-time "
                   "clamp (a stage that was clamped at build size stays clamped, and vice versa).",
                   "timm's Swin has no dynamic_img_pad: the image must be a multiple of the patch size.",
                   *timm_size_probes()])

    # 3. Hugging Face: config size 64x64 (grids 16, 8, 4: the last stage equals the window, no shift) and a
    #    non-square size no window divides: 68x60 -> grids 17x15, 9x8, 5x4 (last: min 4 <= 4, no shift).
    case_hf(out, "hf_v1_pad", cfg_kwargs=dict(
        image_size=[64, 64], patch_size=4, num_channels=3, embed_dim=8, depths=[2, 2, 2], num_heads=[1, 2, 4],
        window_size=4, mlp_ratio=4.0, qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0, hidden_act="gelu", use_absolute_embeddings=False, layer_norm_eps=1e-5, num_labels=10),
        hw=(68, 60), seed=303,
        probe_sizes=[(68, 60), (76, 60), (64, 64), (60, 76), (56, 56), (48, 48), (40, 40), (32, 32), (78, 62)],
        reference_probes=hf_reference_probes(),
        notes=[ORDERS_NOTE, "SwinLayer.set_shift_and_window_size clamps at RUN time and writes the result into the layer "
               "(self.window_size / self.shift_size are overwritten): after one call at a size where a stage is "
               "<= the window, that layer stays unshifted for every later size. Each io file here uses a fresh model.",
               "The relative position bias table is sized for config.window_size at construction, so a run-time "
               "clamp to a SMALLER window makes the bias [nH, M^2, M^2] mismatch the attention [.., w^2, w^2]: "
               "HF fails whenever a stage grid's min side is < window (see size_probes).",
               "swin.embeddings.norm and the merge norms use the default LayerNorm eps 1e-5, not "
               "config.layer_norm_eps (which only reaches layernorm_before/after and swin.layernorm).",
               "Inputs not divisible by the patch size are zero-padded right/bottom before the conv (78x62 probe)."])

    # 4. torchvision, pad-then-roll, no stage smaller than the window, patch 2 (keeps the input small and covers
    #    a patch size other than 4): 34x38 -> grids 17x19, 9x10, 5x5; no stage divides by the window.
    case_tv(out, "tv_v1_pad", kwargs=dict(
        patch_size=[2, 2], embed_dim=8, depths=[2, 2, 2], num_heads=[1, 2, 4], window_size=[4, 4], mlp_ratio=4.0,
        dropout=0.0, attention_dropout=0.0, stochastic_depth_prob=0.0, num_classes=10), hw=(34, 38), seed=404,
        notes=[ORDERS_NOTE, "torchvision builds no image size into the model; the swinref img_size given is the size run here.",
               "torchvision never shrinks the window; a stage smaller than the window is padded up to one window "
               "and its shift switched off per axis (window >= padded size). Sizes here avoid that, so the "
               "official clamp rule and torchvision agree."])

    total = 0
    for f in sorted(out.rglob("*")):
        if f.is_file():
            size = f.stat().st_size
            total += size
            print(f"wrote {f.relative_to(out.parent.parent.parent)}  {size / 1024:.1f} KiB")
    print(f"total {total / 1024:.1f} KiB in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
