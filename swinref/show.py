"""Pictures of Swin's windows: the Python API behind `swinref show`.

Each kind has an array function (the data, from swinref.visual and swinref.analysis), a matplotlib figure and a
terminal rendering (rich, at most 80 columns):

    windows     the window grid of a block on its token map and on the padded, rolled map it attends on, with the
                shift regions' labels and the padding
    mask        one window's additive attention mask, the -100 entries marked, region labels on the axes
    counts      tokens and windows per stage
    complexity  Omega(MSA) against Omega(W-MSA) over square input sizes (analysis.flops.sweep)
    reach       how many input patches the tokens of each block can see, against depth; one token's reach
    reach-models  the largest reach against depth for every registered model (at its own size or one given)
    attention   a token's attention in one block, in image pixels (every head or their mean)
    rollout     attention rollout to the input patches, for one token or the pooled output

matplotlib is an optional extra (`pip install 'swinref[viz]'`); without it the arrays and the terminal rendering
still work and a figure raises MissingExtraError naming the extra. Overlays on images use Pillow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from swinref import visual
from swinref.analysis.windows import PICTURES
from swinref.config import SwinConfig
from swinref.errors import InputError, SwinrefError
from swinref.plan import ModelPlan, plan, resolve_policy

__all__ = ["KINDS", "MissingExtraError", "Picture", "picture", "figure", "terminal", "save", "overlay",
           "require_matplotlib", "jsonable", "reach_by_model", "windows_picture"]

KINDS = PICTURES


class MissingExtraError(SwinrefError):
    """An optional dependency (an extra of swinref) is not installed."""


def require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("drawing figures needs matplotlib, which is not installed: pip install "
                                "'swinref[viz]' (or pip install matplotlib); the terminal rendering and the arrays "
                                "(swinref.show.picture(...).arrays) work without it") from None
    return plt


@dataclass(frozen=True)
class Picture:
    """What one figure shows: its kind, a title, and the arrays (and rows) behind it."""

    kind: str
    title: str
    arrays: dict[str, Any]
    plan: ModelPlan | None = field(default=None, repr=False)
    image: np.ndarray | None = field(default=None, repr=False)  # uint8 [H, W, 3] for overlays


def _mp(cfg: SwinConfig, size: Any, policy: str | None) -> ModelPlan:
    mp = plan(cfg, size, policy)
    if mp.refusal:
        raise InputError(mp.refusal)
    return mp


def _fmt(size: Any) -> str:
    return "x".join(map(str, size))


def picture(kind: str, cfg: SwinConfig, size: Any = None, policy: str | None = None, *, stage: int = 0,
            block: int = 1, window: int | None = None, token: tuple[int, ...] | None = None,
            pixel: tuple[int, ...] | None = None, head: int | str | None = None, model: Any = None,
            image: Any = None, sizes: Any = None) -> Picture:
    """The arrays of one picture. `head`: a head index, None for the mean of the heads, or "all" (attention: every
    head and the mean). `model` (a swinref Model) and `image` (uint8 [H, W, 3] or a PIL image of the
    input size, and the normalised input [1, 3, H, W] computed from it) are needed for attention and rollout."""
    if kind not in KINDS:
        raise InputError(f"unknown picture {kind!r}; choose one of {', '.join(KINDS)}")
    if model is not None:
        # The plan drawn and the forward pass traced must use the same windows: one policy for both.
        policy = resolve_policy(policy or model.policy).name
        if model.policy != policy:
            model = dataclasses.replace(model, policy=policy)
    if kind == "reach-models":
        return reach_by_model(size, policy, [cfg])
    mp = _mp(cfg, size, policy)
    where = f"{cfg.name} at {_fmt(mp.embed.image)}, policy {mp.policy.name}"
    if kind == "counts":
        from swinref.analysis.windows import stage_counts

        rows = stage_counts(cfg, size, policy)
        return Picture(kind, f"tokens and windows per stage: {where}", {"rows": rows}, mp)
    if kind == "complexity":
        from swinref.analysis.flops import sweep

        rows = sweep(cfg, sizes or range(224, 1281, 64))
        return Picture(kind, f"Omega(MSA) vs Omega(W-MSA), all blocks: {cfg.name}", {"rows": rows}, mp)
    if kind == "reach":
        from swinref.analysis.reach import first_full_block, reach, reach_table

        r = reach(cfg, size, policy)
        blk = visual.find_block(mp, stage, block)
        tok = _token(mp, blk, token, pixel)
        arrays = {"rows": reach_table(r), "first_full": first_full_block(r),
                  "first_full_every": first_full_block(r, every=True), "token": tok, "block": blk.name,
                  "map": visual.to_pixels(visual.reach_map(r, stage, block, tok).astype(float), mp, 0)}
        return Picture(kind, f"reach: {where}", arrays, mp)
    blk = visual.find_block(mp, stage, block)
    if kind == "windows":
        return windows_picture(blk, where, mp)
    if kind == "mask":
        if window is None:  # the window with the most regions: the corner one in a shifted block
            window = blk.windows - 1
        m = visual.window_mask(blk, window)
        return Picture(kind, f"{blk.name} window {window} of {blk.windows}: mask ({_fmt(blk.window)} tokens)",
                       {"mask": m.mask, "labels": m.labels, "tokens": m.tokens, "mask_value": blk.mask_value}, mp)
    # attention and rollout need the model's attention for a real input.
    if model is None or image is None:
        raise InputError(f"the {kind} picture needs a model and an image (swinref show {kind} --image FILE "
                         "[--weights CKPT])")
    pixels, x = _input(image, mp)
    if kind == "attention":
        tok = _token(mp, blk, token, pixel)
        probs = model.trace(x, attn_probs=[blk.name])[blk.name + ".attn_probs"]
        # head None: the mean of the heads; "all": every head and the mean, side by side.
        heads = [*range(blk.heads), None] if head == "all" else [head]
        maps, padding = {}, {}
        for h in heads:
            name = "mean" if h is None else f"head {h}"
            values, padding[name] = visual.attention_map(probs, blk, tok, head=h)
            maps[name] = visual.to_pixels(values, mp, blk.stage)
        which = {None: "mean of heads", "all": "every head"}.get(head, f"head {head}")
        return Picture(kind, f"{blk.name} attention of token {tok} ({which}): {where}",
                       {"maps": maps, "token": tok, "padding": padding, "block": blk.name}, mp, pixels)
    if head == "all":
        raise InputError("a rollout composes one head index through every block, or the mean: give --head H or "
                         "leave it out")
    names = visual.rollout_inputs(mp)
    trace = model.trace(x, attn_probs=names)
    probs = {n: trace[n + ".attn_probs"] for n in names}
    target = None if token is None and pixel is None else (stage, block, _token(mp, blk, token, pixel))
    values = visual.rollout(probs, mp, target, head=head)
    what = "the pooled output" if target is None else f"token {target[2]} after {blk.name}"
    return Picture(kind, f"attention rollout of {what}: {where}",
                   {"map": visual.to_pixels(values, mp, 0), "patches": values, "target": target}, mp, pixels)


def windows_picture(blk: Any, where: str = "", mp: ModelPlan | None = None) -> Picture:
    """The window picture of one BlockPlan (of any number of spatial axes: a clip is drawn frame by frame)."""
    layout = visual.window_layout(blk)
    arrays = {"window_id": layout.window_id, "region": layout.region, "rolled_source": layout.rolled_source,
              "rolled_region": layout.rolled_region, "window": blk.window, "shift": blk.shift, "pad": blk.pad,
              "roll_before_pad": blk.roll_before_pad, "mask": blk.mask}
    kind_name = "SW-MSA" if blk.shifted else "W-MSA"
    title = (f"{blk.name} ({kind_name}, window {_fmt(blk.window)}, shift {_fmt(blk.shift)}, pad {_fmt(blk.pad)})"
             + (f": {where}" if where else ""))
    return Picture("windows", title, arrays, mp)


def reach_by_model(size: Any = None, policy: str | None = None, names: Any = None) -> Picture:
    """Per registered model with as many spatial axes as `size` (or the `names` given), the largest reach after each block as a fraction of the input
    patches, at the model's own size (size None) or at `size`, and the first block where a token sees everything.
    Per axis the largest spans belong to one token (the reach is a product over axes), so the largest area is the
    product of the largest extents."""
    import math

    from swinref.analysis.reach import first_full_block, reach, reach_table
    from swinref.config import REGISTRY, get_config

    from swinref.config import parse_size

    axes = None if size is None else len(parse_size(size) if isinstance(size, str) else tuple(size))
    rows = []
    for name in names or REGISTRY:
        cfg = name if isinstance(name, SwinConfig) else get_config(name)
        if names is None and axes is not None and len(cfg.img_size) != axes:
            continue  # a size of images leaves out the clip models, and a clip size the image models
        r = reach(cfg, size, policy)
        if r.plan.refusal:
            raise InputError(f"{cfg.name}: {r.plan.refusal}")
        table = reach_table(r)
        rows.append({"model": cfg.name, "size": list(r.plan.embed.image), "depth": [t["depth"] for t in table],
                     "fraction": [math.prod(t["max_extent"]) / math.prod(r.grid) for t in table],
                     "first_full": first_full_block(r), "first_full_every": first_full_block(r, every=True)})
    where = "own sizes" if size is None else "x".join(map(str, rows[0]["size"]))
    pol = resolve_policy(policy).name
    return Picture("reach-models", f"largest reach against depth, registered models at {where}, policy {pol}",
                   {"rows": rows})


def _token(mp: ModelPlan, blk: Any, token: Any, pixel: Any) -> tuple[int, ...]:
    if token is not None and pixel is not None:
        raise InputError("give a token or a pixel, not both")
    if pixel is not None:
        return visual.pixel_token(mp, blk.stage, tuple(pixel))
    if token is None:
        return tuple(n // 2 for n in blk.resolution)
    visual.token_window(blk, tuple(token))
    return tuple(token)


def _input(image: Any, mp: ModelPlan) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [H, W, 3] pixels to draw on, the normalised float input [1, 3, H, W] the model sees)."""
    from swinref.preprocess import IMAGENET_MEAN, IMAGENET_STD

    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise InputError(f"the image should be uint8 [H, W, 3] RGB, got {pixels.dtype} {list(pixels.shape)}")
    if tuple(pixels.shape[:2]) != tuple(mp.embed.image):
        raise InputError(f"the image is {pixels.shape[0]}x{pixels.shape[1]} but the plan is for "
                         f"{_fmt(mp.embed.image)}; resize it first (swinref.preprocess) or give --img")
    x = (pixels.astype(np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD,
                                                                                                  np.float32)
    return pixels, np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def jsonable(pic: Picture) -> dict[str, Any]:
    """The arrays of a Picture as JSON values; the pixel-sized maps are left out (their token-level arrays stay)."""
    def value(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        return v.item() if isinstance(v, np.generic) else v

    return {k: value(v) for k, v in pic.arrays.items() if k not in ("map", "maps")}


# ---------------------------------------------------------------------------------------------------------------
# Figures (matplotlib).


def _frames(a: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """A map of any number of axes as 2-D frames: itself, or one per index of the leading axes (video: per T)."""
    a = np.asarray(a)
    if a.ndim <= 2:
        return [("", a)]
    lead = a.shape[:-2]
    return [("frame " + ",".join(map(str, i)), a[i]) for i in np.ndindex(*lead)]


def _grid_lines(ax: Any, shape: tuple[int, int], window: tuple[int, ...], color: str = "black") -> None:
    for k in range(0, shape[0] + 1, window[-2]):
        ax.axhline(k - 0.5, color=color, lw=1.2)
    for k in range(0, shape[1] + 1, window[-1]):
        ax.axvline(k - 0.5, color=color, lw=1.2)


def _label_cells(ax: Any, values: np.ndarray, limit: int = 24) -> None:
    if max(values.shape) > limit:
        return
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7)


def figure(pic: Picture) -> Any:
    """A matplotlib Figure of a Picture."""
    plt = require_matplotlib()
    a = pic.arrays
    if pic.kind == "windows":
        # Clips (three axes) are drawn frame by frame: the token map's frames on the left, the padded, rolled
        # map's frames (more of them when the time axis is padded) on the right.
        left = list(zip(_frames(a["window_id"]), _frames(a["region"])))
        right = list(zip(_frames(a["rolled_region"]), _frames(a["rolled_source"])))
        rows = max(len(left), len(right))
        fig, axes = plt.subplots(rows, 2, figsize=(10, 4.4 * rows), squeeze=False)
        for i, row in enumerate(axes):
            if i < len(left):
                (name, ids), (_, region) = left[i]
                row[0].imshow(ids % 20, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
                _label_cells(row[0], region)
                row[0].set_title(f"{name or 'token map'}: colour = window, number = region", fontsize=8)
            else:
                row[0].axis("off")
            if i < len(right):
                (name, rolled), (_, src) = right[i]
                shown = np.where(src >= 0, rolled, -1)
                row[1].imshow(np.ma.masked_less(shown, 0) % 20, cmap="tab20", vmin=0, vmax=19,
                              interpolation="nearest")
                row[1].imshow(np.ma.masked_where(src >= 0, np.ones(src.shape)), cmap="Greys", vmin=0, vmax=2,
                              interpolation="nearest")
                _grid_lines(row[1], rolled.shape, a["window"])
                _label_cells(row[1], shown)
                when = f"{name} (window {i // a['window'][0]} on axis 0) " if name else ""
                row[1].set_title(f"{when}padded, rolled by -{_fmt(a['shift'])}: regions, -1 padding", fontsize=8)
            else:
                row[1].axis("off")
        fig.suptitle(pic.title, fontsize=9)
        return fig
    if pic.kind == "mask":
        mask, labels = a["mask"], a["labels"]
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(mask != 0, cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
        n = len(labels)
        if n <= 16:
            for (i, j), v in np.ndenumerate(mask):
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8, color="white" if v else "black")
        step = max(1, n // 16)
        ticks = list(range(0, n, step))
        ax.set_xticks(ticks, [str(labels[t]) for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(labels[t]) for t in ticks], fontsize=7)
        ax.set_xlabel("key: region label")
        ax.set_ylabel("query: region label")
        ax.set_title(f"{pic.title}\ndark: {a['mask_value']:g} (different regions)", fontsize=9)
        return fig
    if pic.kind == "counts":
        rows = a["rows"]
        fig, ax = plt.subplots(figsize=(7, 4))
        stages = [r["stage"] for r in rows]
        ax.bar([s - 0.2 for s in stages], [r["tokens"] for r in rows], width=0.4, label="tokens")
        ax.bar([s + 0.2 for s in stages], [r["windows"] for r in rows], width=0.4, label="windows nW")
        ax.set_yscale("log")
        ax.set_xticks(stages, [f"stage {s}\n{_fmt(r['resolution'])}, M={_fmt(r['window'])}"
                               for s, r in zip(stages, rows)], fontsize=7)
        ax.legend()
        ax.set_title(pic.title, fontsize=9)
        return fig
    if pic.kind == "complexity":
        rows = a["rows"]
        fig, ax = plt.subplots(figsize=(7, 4))
        sizes = [r["size"] for r in rows]
        ax.plot(sizes, [r["msa"] / 1e9 for r in rows], "o-", label="Omega(MSA) = 4hwC^2 + 2(hw)^2 C")
        ax.plot(sizes, [r["wmsa"] / 1e9 for r in rows], "s-", label="Omega(W-MSA) = 4hwC^2 + 2M^2 hwC")
        ax.set_yscale("log")
        ax.set_xlabel("square input side (pixels)")
        ax.set_ylabel("GMACs, attention of all blocks")
        ax.legend(fontsize=8)
        ax.set_title(pic.title, fontsize=9)
        return fig
    if pic.kind == "reach":
        rows = a["rows"]
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        depth = [r["depth"] for r in rows]
        for k, name in enumerate(["rows" if len(rows[0]["grid"]) > 1 else "axis 0", "columns"][:len(rows[0]["grid"])]):
            ax.step(depth, [r["max_extent"][k] for r in rows], where="mid", label=f"largest reach ({name})")
            ax.step(depth, [r["min_extent"][k] for r in rows], where="mid", ls="--", label=f"smallest ({name})")
            ax.axhline(rows[0]["grid"][k], color="grey", lw=0.8)
        ax.set_xlabel("block (depth)")
        ax.set_ylabel("input patches seen (extent)")
        ax.legend(fontsize=7)
        ax.set_title(f"first block where a token sees everything: {a['first_full'] or 'never'}", fontsize=8)
        _imshow_frames(ax2, a["map"], cmap="Blues")
        ax2.set_title(f"reach of token {a['token']} after {a['block']}", fontsize=8)
        fig.suptitle(pic.title, fontsize=9)
        return fig
    if pic.kind == "reach-models":
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in a["rows"]:
            ax.plot(r["depth"], r["fraction"], drawstyle="steps-mid", lw=1, label=r["model"])
        ax.set_xlabel("block (depth)")
        ax.set_ylabel("largest reach / input patches")
        ax.legend(fontsize=5, ncol=2)
        ax.set_title(pic.title, fontsize=9)
        return fig
    # attention / rollout: overlays on the image
    maps = a["maps"] if pic.kind == "attention" else {"rollout": a["map"]}
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    for ax, (name, values) in zip(axes.flat, maps.items()):
        ax.imshow(np.asarray(overlay(pic.image, values)))
        if pic.kind == "attention":  # outline the query token
            blk = visual.find_block(pic.plan, *_stage_block(a["block"]))
            query = np.zeros(blk.resolution)
            query[a["token"]] = 1.0
            ax.contour(np.nan_to_num(visual.to_pixels(query, pic.plan, blk.stage)), levels=[0.5], colors="cyan",
                       linewidths=1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(pic.title, fontsize=9)
    return fig


def _stage_block(name: str) -> tuple[int, int]:
    parts = name.split(".")
    return int(parts[1]), int(parts[3])


def _imshow_frames(ax: Any, values: np.ndarray, cmap: str) -> None:
    frames = _frames(values)
    ax.imshow(np.concatenate([f for _, f in frames], axis=1) if len(frames) > 1 else frames[0][1], cmap=cmap,
              interpolation="nearest")


def save(pic: Picture, path: str, dpi: int = 100) -> str:
    """Draw a Picture and write it as PNG or SVG (by the file's suffix; `dpi` for PNG); returns the path."""
    import pathlib

    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise InputError(f"cannot write {path!r}: give a .png or .svg file name")
    fig = figure(pic)
    plt = require_matplotlib()
    try:
        # Text stays text in an SVG (small files, searchable) instead of one path per glyph; a fixed salt and no
        # date make the same figure the same file.
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "swinref"}):
            fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Date": None} if suffix == ".svg" else None)
    except OSError as exc:
        raise InputError(f"cannot write {path!r}: {exc.strerror or exc}; check the directory exists") from None
    finally:
        plt.close(fig)
    return path


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.6) -> Any:
    """A PIL image: `values` [H, W] (NaN where nothing) scaled from their minimum to their maximum as a heat colour
    over `image` (uint8 [H, W, 3])."""
    from PIL import Image

    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    low, top = (v[finite].min(), v[finite].max()) if finite.any() else (0.0, 0.0)
    t = np.where(finite, (v - low) / (top - low) if top > low else 0.0, 0.0)[..., None]
    heat = np.concatenate([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)
    base = np.asarray(image, dtype=np.float64) / 255.0
    weight = alpha * t  # the image shows through where the value is small
    mixed = np.where(finite[..., None], (1 - weight) * base + weight * heat, base)
    return Image.fromarray(np.round(mixed * 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Terminal (rich), at most 80 columns.

_SHADES = " .:-=+*#%@"
_LABELS = "0123456789abcdefghijklmnopqrstuvwxyz"  # one character per region label (3-D has 27)


def terminal(pic: Picture) -> Any:
    """A rich renderable of a Picture, at most 80 columns wide."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    import textwrap

    a = pic.arrays
    parts: list[Any] = [Text("\n".join(textwrap.wrap(pic.title, 80)), style="bold")]
    if pic.kind == "windows":
        for (name, regions), (_, src) in zip(_frames(a["rolled_region"]), _frames(a["rolled_source"])):
            title = " ".join(filter(None, ("padded, rolled map", name)))
            parts.append(Text(f"{title}: region label per token (10.. as a..), '.' padding,\n"
                              "background alternating per window"))
            parts.append(_token_text(regions, src, a["window"]))
    elif pic.kind == "mask":
        mask, labels = a["mask"], a["labels"]
        text = Text("      " + "".join(str(v % 10) for v in labels[:70]) + "\n")
        for i, row in enumerate(mask[:40]):
            text.append(f"{labels[i]:>4}  ")
            text.append("".join("#" if v else "." for v in row[:70]) + "\n")
        parts += [Text(f"'#': {a['mask_value']:g}, '.': 0; rows queries, columns keys, labelled by region"), text]
    elif pic.kind == "counts":
        t = Table(*("stage", "tokens", "padded", "window", "shift", "nW", "N"), width=78)
        for r in a["rows"]:
            t.add_row(str(r["stage"]), _fmt(r["resolution"]), _fmt(r["padded"]), _fmt(r["window"]),
                      _fmt(r["shift"]), f"{r['windows']:,}", str(r["window_tokens"]))
        parts.append(t)
    elif pic.kind == "complexity":
        rows = a["rows"]
        top = max(r["ratio"] for r in rows)
        t = Table(*("size", "MSA GMAC", "W-MSA GMAC", "ratio", ""), width=78)
        for r in rows:
            t.add_row(str(r["size"]), f"{r['msa'] / 1e9:.2f}", f"{r['wmsa'] / 1e9:.2f}", f"{r['ratio']:.1f}",
                      "#" * max(1, round(30 * r["ratio"] / top)))
        parts.append(t)
    elif pic.kind == "reach":
        t = Table(*("block", "depth", "smallest", "largest", "of", "sees all"), width=78)
        for r in a["rows"]:
            t.add_row(r["block"], str(r["depth"]), _fmt(r["min_extent"]), _fmt(r["max_extent"]), _fmt(r["grid"]),
                      "every token" if r["every_token_sees_all"] else ("some token" if r["some_token_sees_all"]
                                                                       else ""))
        parts.append(t)
        parts.append(Text(f"first block where a token sees the whole input: {a['first_full'] or 'never'};\n"
                          f"where every token does: {a['first_full_every'] or 'never'}"))
        parts.append(Text(f"reach of token {a['token']} after {a['block']} ('#' seen):"))
        parts.append(Text(_shade(a["map"], "#")))
    elif pic.kind == "reach-models":
        t = Table(*("model", "blocks", "one sees all", "all see all"), box=None, width=78)
        for r in a["rows"]:
            t.add_row(r["model"], str(len(r["depth"])), _short(r["first_full"]), _short(r["first_full_every"]))
        parts += [t, Text("(stage.block: the first block where one / every token sees the whole input)")]
    else:
        maps = a["maps"] if pic.kind == "attention" else {"rollout": a["map"]}
        for name, values in maps.items():
            parts.append(Text(f"{name}: denser characters, more attention"))
            parts.append(Text(_shade(values, _SHADES)))
    return Group(*parts)


def _short(block: str | None) -> str:
    """'layers.2.blocks.11' -> '2.11'."""
    if block is None:
        return "never"
    parts = block.split(".")
    return f"{parts[1]}.{parts[3]}"


def _token_text(regions: np.ndarray, src: np.ndarray, window: tuple[int, ...]) -> Any:
    """The bottom-right corner (where the shift wraps and the padding sits) of a padded, rolled map, 2 columns per
    token, at most 30 x 38 tokens."""
    from rich.text import Text

    rows, cols = regions.shape
    r0, c0 = max(0, rows - 30), max(0, cols - 38)
    text = Text()
    for i in range(r0, rows):
        for j in range(c0, cols):
            shade = "on grey23" if ((i // window[-2]) + (j // window[-1])) % 2 else "on grey11"
            text.append((_LABELS[regions[i, j]] if src[i, j] >= 0 else ".") + " ", style=shade)
        text.append("\n")
    if r0 or c0:
        text.append(f"(rows {r0}..{rows - 1}, columns {c0}..{cols - 1} of {rows}x{cols})\n")
    return text


def _shade(values: np.ndarray, shades: str) -> str:
    """A 2-D (first frame of an N-D) map averaged into at most 78x32 characters."""
    v = np.asarray(_frames(values)[0][1], dtype=np.float64)
    rows, cols = v.shape
    step = max(1, -(-cols // 78), -(-rows // 32))
    h, w = -(-rows // step), -(-cols // step)
    padded = np.full((h * step, w * step), np.nan)
    padded[:rows, :cols] = v
    with np.errstate(invalid="ignore"):
        cells = np.nanmean(padded.reshape(h, step, w, step), axis=(1, 3)) if step > 1 else padded
    top = np.nanmax(cells) if np.isfinite(cells).any() else 0.0
    if len(shades) == 1:
        return "\n".join("".join(shades if c > 0 else "." for c in row) for row in np.nan_to_num(cells))
    scaled = np.nan_to_num(cells / top if top > 0 else cells * 0) * (len(shades) - 1)
    return "\n".join("".join(shades[int(round(c))] for c in row) for row in scaled)
