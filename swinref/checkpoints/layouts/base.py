"""What every layout module shares: the notes a translation leaves, two-way name rules, and small helpers.

A layout module (official.py, timm.py, ...) has the same five members:

    NAME                                    the layout's name in load reports
    recognise(keys) -> bool                 do these state-dict names follow the layout
    to_canonical(sd, source) -> (params, Notes)
                                            canonical names; derived buffers set aside in the notes
    from_canonical(params, cfg) -> dict     the peer's own state dict (NumPy arrays, no derived buffers)
    config_hints(sidecar, source) -> dict   SwinConfig fields stated by the configuration stored with the weights

Most of a layout is a table of `Rule`s read in both directions, so that to_canonical and from_canonical cannot
drift apart; what is not a rename (HF's three projections, torchvision's V2 bias, OpenMMLab's merge order) is a
tensor step beside the table.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from swinref.errors import CheckpointError

__all__ = ["Notes", "Rule", "Rules", "DERIVED_BUFFERS", "is_derived", "translate", "put", "split_backbone",
           "alias_final_norm", "identity_final_norm", "drop_final_norm_alias", "stage_count", "arrays", "APE",
           "ape_from_tokens", "ape_to_tokens"]

# Names of buffers that every peer derives from the window size; recomputed by swinref, never read.
DERIVED_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")


@dataclasses.dataclass
class Notes:
    """What a translation to canonical names did besides renaming (collected into swinref's LoadReport)."""

    dropped: list[str] = dataclasses.field(default_factory=list)    # derived buffers, names as in the file
    buffers: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # the same, canonical names
    prefix: str | None = None                                          # stripped from the names ('swin.', ...)
    ignored: list[str] = dataclasses.field(default_factory=list)     # entries that are not the backbone's
    messages: list[str] = dataclasses.field(default_factory=list)    # anything else the reader should know


def is_derived(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in DERIVED_BUFFERS


def arrays(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in params.items()}


def put(params: dict[str, np.ndarray], name: str, value: np.ndarray, original: str) -> None:
    """Two source names landing on one target name (e.g. a file holding both HF name generations) is an error,
    not a silent overwrite."""
    if name in params:
        raise CheckpointError(
            f"two entries of the checkpoint translate to {name!r} (the second is {original!r}): the file mixes "
            f"layouts; save it again from one model"
        )
    params[name] = value


# Two-way name rules --------------------------------------------------------------------------------------------

# A slot in a template: {s}, {s+1}, {s*2+1} (a non-negative integer, mapped linearly).
_SLOT = re.compile(r"\{([a-z])(?:\*(\d+))?(?:\+(\d+))?\}")


class _Template:
    def __init__(self, text: str) -> None:
        self.text = text
        self.slots: list[tuple[str, int, int]] = []
        pattern, pos = "^", 0
        for m in _SLOT.finditer(text):
            pattern += re.escape(text[pos:m.start()]) + r"(\d+)"
            self.slots.append((m.group(1), int(m.group(2) or 1), int(m.group(3) or 0)))
            pos = m.end()
        self.regex = re.compile(pattern + re.escape(text[pos:]))

    def match(self, name: str) -> tuple[dict[str, int], str] | None:
        """(slot values, the rest of the name) when the name starts with this template."""
        m = self.regex.match(name)
        if m is None:
            return None
        values: dict[str, int] = {}
        for (slot, times, plus), digits in zip(self.slots, m.groups()):
            n = int(digits) - plus
            if n < 0 or n % times or values.setdefault(slot, n // times) != n // times:
                return None
        return values, name[m.end():]

    def fill(self, values: Mapping[str, int]) -> str:
        return _SLOT.sub(lambda m: str(values[m.group(1)] * int(m.group(2) or 1) + int(m.group(3) or 0)), self.text)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A canonical name prefix and the peer's, with integer slots: Rule("layers.{s}.downsample.",
    "layers.{s+1}.downsample.") says timm's merge of stage s+1 is the canonical merge after stage s."""

    canonical: str
    peer: str


class Rules:
    """An ordered table of Rules. Reading, the first rule whose peer side matches wins; writing, the first whose
    canonical side matches. Names no rule matches keep their name (so the shape check reports strangers)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = [(_Template(r.canonical), _Template(r.peer)) for r in rules]

    def to_canonical(self, name: str) -> str:
        return self._rename(name, reading=True)

    def to_peer(self, name: str) -> str:
        return self._rename(name, reading=False)

    def _rename(self, name: str, reading: bool) -> str:
        for canonical, peer in self.rules:
            src, dst = (peer, canonical) if reading else (canonical, peer)
            found = src.match(name)
            if found is not None:
                return dst.fill(found[0]) + found[1]
        return name


def translate(sd: Mapping[str, np.ndarray], rename: Callable[[str], str], notes: Notes) -> dict[str, np.ndarray]:
    """Rename every entry; derived buffers go to notes (dropped, and under canonical names for detection)."""
    params: dict[str, np.ndarray] = {}
    for name, value in sd.items():
        new = rename(name)
        if is_derived(name):
            notes.dropped.append(name)
            notes.buffers[new] = value
        else:
            put(params, new, value, name)
    return params


# Backbones of detection / segmentation models ------------------------------------------------------------------

_BACKBONE = "backbone."


def split_backbone(sd: Mapping[str, np.ndarray], marker: str) -> tuple[dict[str, np.ndarray], str | None, list[str]]:
    """(the backbone's entries without 'backbone.', the prefix or None, the top-level modules left out).

    A detector or segmentor checkpoint holds the backbone under 'backbone.' beside its neck and heads
    ('neck.', 'rpn_head.', 'decode_head.', ...); `marker` is a name the backbone has (its patch embedding)."""
    if marker in sd or _BACKBONE + marker not in sd:
        return dict(sd), None, []
    inner = {k[len(_BACKBONE):]: v for k, v in sd.items() if k.startswith(_BACKBONE)}
    # modules as 'neck.'; a top-level tensor (detectron2's pixel_mean) by its own name
    others = sorted({k.split(".", 1)[0] + ("." if "." in k else "") for k in sd if not k.startswith(_BACKBONE)})
    return inner, _BACKBONE, others


def stage_count(names: Iterable[str], pattern: str = r"^layers\.(\d+)\.blocks\.") -> int:
    stages = {int(m.group(1)) for n in names if (m := re.match(pattern, n))}
    return max(stages) + 1 if stages else 0


def alias_final_norm(params: dict[str, np.ndarray], notes: Notes) -> None:
    """Backbones keep one LayerNorm per output stage (norm0..norm3) and no separate final norm: the last stage's
    output norm is where the classifier's `norm` sits (mmpretrain's classifiers use norm3 as theirs). When `norm`
    is absent it becomes the same array as the last stage's; norm0..norm3 stay as they are."""
    last = stage_count(params) - 1
    if last < 0 or "norm.weight" in params or f"norm{last}.weight" not in params:
        return
    for leaf in ("weight", "bias"):
        if f"norm{last}.{leaf}" in params:
            params[f"norm.{leaf}"] = params[f"norm{last}.{leaf}"]
    notes.messages.append(f"norm is norm{last}, the last stage's output norm (the file has no separate final norm)")


def identity_final_norm(params: dict[str, np.ndarray], notes: Notes, what: str) -> None:
    """A backbone file with no final norm and no per-stage output norms (timm features_only, transformers'
    Swinv2Backbone): `norm`, which only a pooled output reads, becomes the identity LayerNorm, and the notes say so."""
    if "norm.weight" in params or "head.weight" in params:
        return
    width = params.get(f"layers.{stage_count(params) - 1}.blocks.0.norm1.weight")
    if width is None:
        return  # the shape check reports what is missing
    params["norm.weight"], params["norm.bias"] = np.ones_like(width), np.zeros_like(width)
    notes.messages.append(
        f"the file has no final norm and no per-stage output norms ({what}): norm is the identity LayerNorm, so "
        f"the stage features are the file's but a pooled output is not a trained norm's"
    )


# The official detection backbone's absolute position embedding, canonical [1, C, Hp, Wp] (Hp, Wp: the pretraining
# grid); OpenMMLab (absolute_pos_embed) and transformers (embeddings.position_embeddings) keep it as [1, Hp*Wp, C],
# the tokens in row-major order.
APE = "absolute_pos_embed"


def ape_from_tokens(value: np.ndarray, name: str, source: str) -> np.ndarray:
    """[1, L, C] row-major tokens -> [1, C, Hp, Wp]. The file does not say the grid; the peers that store tokens
    build it square (transformers reshapes it to sqrt(L) x sqrt(L) itself), so L must be a square."""
    if value.ndim != 3 or value.shape[0] != 1:
        raise CheckpointError(f"{source}: {name} has shape {list(value.shape)}, expected [1, tokens, C]")
    side = int(round(value.shape[1] ** 0.5))
    if side * side != value.shape[1]:
        raise CheckpointError(
            f"{source}: {name} holds {value.shape[1]} positions, not a square grid; swinref cannot tell its height "
            f"and width (save it as the official [1, C, Hp, Wp] absolute_pos_embed)"
        )
    return np.ascontiguousarray(value.reshape(1, side, side, value.shape[2]).transpose(0, 3, 1, 2))


def ape_to_tokens(value: np.ndarray) -> np.ndarray:
    """[1, C, Hp, Wp] -> [1, Hp*Wp, C] row-major tokens."""
    return np.ascontiguousarray(value.reshape(1, value.shape[1], -1).transpose(0, 2, 1))


def drop_final_norm_alias(params: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """The inverse of alias_final_norm for a layout that has per-stage norms only: the last stage's norm is
    `norm` when params have no norm{last}; `norm` must equal norm{last} when both are given."""
    last = stage_count(params) - 1
    out = dict(params)
    for leaf in ("weight", "bias"):
        final, stage = out.pop(f"norm.{leaf}", None), f"norm{last}.{leaf}"
        if final is None:
            continue
        if stage not in out:
            out[stage] = final
        elif not np.array_equal(out[stage], final):
            raise CheckpointError(
                f"the {layout} layout has one LayerNorm after the last stage (norm{last}) but the params hold a "
                f"different norm.{leaf} and {stage}; drop one of them"
            )
    return out
