"""Compare a candidate implementation's arrays with a golden case, point by point, in execution order.

The candidate is a dict of arrays (or a .npz / .safetensors file, or a directory of .npy files) named by swinref's
point names, or by its own module names plus a mapping (JSON) that renames them and states any layout change.
Layouts are never guessed: a [B, L, C] or NCHW array meets an NHWC golden point only through an explicit
"reshape" in the mapping or the --reshape option; otherwise the shape mismatch is reported.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from swinref.golden.case import EPS, MANIFEST, GoldenCase, GoldenError, read_case

__all__ = [
    "compare", "compare_case", "load_candidate", "load_mapping", "apply_mapping", "format_report", "assert_matches",
    "RESHAPES", "BUILTIN_MAPPINGS", "NameMapping",
]

MAPPING_FORMAT = "swinref-golden-mapping"
BUILTIN_MAPPINGS = ("timm", "hf", "mmdet", "hf_backbone", "torchvision_swin3d")


# ----------------------------------------------------------------------------------------------------------------
# Layout changes a porter plausibly has, each stated by name. `target` is the golden point's shape.

def _blc_to_bhwc(a: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    B, H, W, C = target
    if a.ndim != 3 or a.shape != (B, H * W, C):
        raise ValueError(f"expected [B, L, C] = [{B}, {H * W}, {C}]")
    return a.reshape(B, H, W, C)


def _blc_to_bchw(a: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    B, C, H, W = target
    return np.transpose(_blc_to_bhwc(a, (B, H, W, C)), (0, 3, 1, 2))


def _bcl_to_bhwc(a: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    if a.ndim != 3:
        raise ValueError("expected [B, C, L]")
    return _blc_to_bhwc(np.swapaxes(a, 1, 2), target)


def _nchw_to_nhwc(a: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    if a.ndim != 4:
        raise ValueError("expected [B, C, H, W]")
    return np.transpose(a, (0, 2, 3, 1))


def _bc1_to_bc(a: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    if a.ndim != 3 or a.shape[-1] != 1:
        raise ValueError("expected [B, C, 1]")
    return a[..., 0]


def _bc111_to_bc(a: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    if a.ndim != 5 or a.shape[2:] != (1, 1, 1):
        raise ValueError("expected [B, C, 1, 1, 1]")
    return a[:, :, 0, 0, 0]


RESHAPES = {
    "BLC->BHWC": _blc_to_bhwc,    # timm / HF flattened tokens; H, W from the golden point
    "BLC->BCHW": _blc_to_bchw,    # a backbone's normalised stage tokens to its channels-first pyramid output
    "BCL->BHWC": _bcl_to_bhwc,    # tokens channels-first
    "NCHW->NHWC": _nchw_to_nhwc,  # torchvision-style feature maps
    "BC1->BC": _bc1_to_bc,        # HF pooler output (AdaptiveAvgPool1d keeps a length-1 axis)
    "BC111->BC": _bc111_to_bc,    # torchvision swin3d's AdaptiveAvgPool3d(1) output
}


# ----------------------------------------------------------------------------------------------------------------
# Mappings.


@dataclass(frozen=True)
class Rule:
    candidate: str
    golden: str
    reshape: str | None = None
    pattern: re.Pattern = field(default=None, compare=False)  # type: ignore[assignment]
    output: int | None = None  # for hook writers: which element of a module's tuple output holds the point

    def golden_name(self, candidate_name: str) -> str | None:
        """The golden name of `candidate_name` under this rule, or None when the rule does not match it."""
        m = self.pattern.match(candidate_name)
        return None if m is None else _fill(self.golden, m.groupdict(), f"rule {self.candidate!r}")


@dataclass(frozen=True)
class NameMapping:
    """Candidate-name -> golden-name rules, tried in order; unmatched names are taken as golden names."""

    name: str
    rules: tuple[Rule, ...]
    description: str = ""

    def match(self, candidate_name: str) -> tuple[str, Rule] | None:
        """(golden name, rule) of the first rule that matches `candidate_name`, or None."""
        for rule in self.rules:
            golden = rule.golden_name(candidate_name)
            if golden is not None:
                return golden, rule
        return None


_FIELD = re.compile(r"\{([A-Za-z_]\w*)\}")
_GOLDEN_FIELD = re.compile(r"\{([A-Za-z_]\w*)([+-]\d+)?\}")


def _compile(template: str) -> re.Pattern:
    parts, pos = [], 0
    for m in _FIELD.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        parts.append(f"(?P<{m.group(1)}>\\d+)")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts) + r"\Z")


def _fill(template: str, values: dict[str, str], where: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise GoldenError(f"{where}: the golden name {template!r} uses {{{m.group(1)}}}, which the candidate "
                              f"name does not define; fix the mapping")
        return str(int(values[m.group(1)]) + int(m.group(2) or 0))

    return _GOLDEN_FIELD.sub(sub, template)


def mapping_from_dict(data: Any, source: str) -> NameMapping:
    if not isinstance(data, dict) or data.get("format") != MAPPING_FORMAT:
        raise GoldenError(f"{source} is not a swinref golden mapping: it needs \"format\": \"{MAPPING_FORMAT}\" and "
                          f"a \"points\" list of {{\"candidate\": ..., \"golden\": ...}} (see docs/golden.md)")
    if data.get("version") != 1:
        raise GoldenError(f"{source} is mapping version {data.get('version')!r}; this swinref reads version 1")
    rules = []
    for k, entry in enumerate(data.get("points", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("candidate"), str) or \
                not isinstance(entry.get("golden"), str):
            raise GoldenError(f"{source}: entry {k} needs string fields \"candidate\" and \"golden\", got {entry!r}")
        reshape = entry.get("reshape")
        if reshape is not None and reshape not in RESHAPES:
            raise GoldenError(f"{source}: entry {k} has reshape {reshape!r}; known: {', '.join(RESHAPES)}")
        undefined = {m.group(1) for m in _GOLDEN_FIELD.finditer(entry["golden"])} - \
            {m.group(1) for m in _FIELD.finditer(entry["candidate"])}
        if undefined:
            raise GoldenError(f"{source}: entry {k}: the golden name {entry['golden']!r} uses "
                              f"{', '.join('{' + u + '}' for u in sorted(undefined))}, which the candidate name "
                              f"{entry['candidate']!r} does not define; fix the mapping")
        output = entry.get("output")
        if output is not None and not isinstance(output, int):
            raise GoldenError(f"{source}: entry {k} has output {output!r}; it must be an integer index")
        rules.append(Rule(entry["candidate"], entry["golden"], reshape, _compile(entry["candidate"]), output))
    return NameMapping(name=str(data.get("name", source)), rules=tuple(rules), description=str(data.get("description", "")))


def load_mapping(spec: str | os.PathLike | NameMapping | dict | None) -> NameMapping | None:
    """A built-in mapping by name ('timm', 'hf', 'mmdet', 'hf_backbone'), a JSON file, a dict in the file's form, or None (no renaming)."""
    if spec is None or isinstance(spec, NameMapping):
        return spec
    if isinstance(spec, dict):
        return mapping_from_dict(spec, "the mapping")
    spec = os.fspath(spec)
    if spec in BUILTIN_MAPPINGS:
        from importlib.resources import files

        text = files("swinref.golden").joinpath("mappings", spec + ".json").read_text()
        return mapping_from_dict(json.loads(text), f"the built-in mapping {spec!r}")
    if not os.path.isfile(spec):
        raise GoldenError(f"mapping {spec!r} is neither a built-in mapping ({', '.join(BUILTIN_MAPPINGS)}) nor a "
                          f"JSON file; give one of those")
    try:
        with open(spec) as f:
            data = json.load(f)
    except ValueError as exc:
        raise GoldenError(f"mapping file {spec} is not valid JSON ({exc}); fix it") from None
    return mapping_from_dict(data, spec)


def apply_mapping(names: list[str], mapping: NameMapping | None) -> dict[str, tuple[str, str | None]]:
    """candidate name -> (golden name, reshape or None). Two candidate names on one golden name is an error."""
    out: dict[str, tuple[str, str | None]] = {}
    seen: dict[str, str] = {}
    for name in names:
        found = mapping.match(name) if mapping else None
        target = (found[0], found[1].reshape) if found else (name, None)
        if target[0] in seen:
            raise GoldenError(f"candidate arrays {seen[target[0]]!r} and {name!r} both map to the golden point "
                              f"{target[0]!r}; drop one or fix the mapping")
        seen[target[0]] = name
        out[name] = target
    return out


# ----------------------------------------------------------------------------------------------------------------
# Candidates.


def load_candidate(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays from a .npz file, a .safetensors file, a directory of NAME.npy files, or a case directory written by
    `swinref golden export` (its input and points, checked against its manifest): two cases compare directly."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return dict(read_case(path).arrays)
    try:
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
            if not files:
                raise GoldenError(f"{path} is a directory without .npy files; give a directory of NAME.npy files, "
                                  f"a golden case directory, a .npz or a .safetensors file")
            return {f[:-4]: np.load(os.path.join(path, f), allow_pickle=False) for f in files}
        if not os.path.isfile(path):
            raise GoldenError(f"candidate {path} does not exist; give a .npz, a .safetensors file or a directory "
                              f"of .npy files")
        # swinref's checkpoint readers: sizes checked before anything is allocated, every damage named plainly.
        from swinref.checkpoints.files import read_npz, read_safetensors

        if path.endswith(".safetensors"):
            return read_safetensors(path)[0]
        if path.endswith(".npz"):
            return read_npz(path)[0]
    except GoldenError:
        raise
    except Exception as exc:
        raise GoldenError(f"cannot read candidate {path} ({type(exc).__name__}: {exc}); write it with np.savez, "
                          f"safetensors.numpy.save_file or np.save") from None
    raise GoldenError(f"candidate {path}: unknown file type; give a .npz, a .safetensors file or a directory of "
                      f".npy files")


# ----------------------------------------------------------------------------------------------------------------
# The comparison.


def _ordered_ints(a: np.ndarray) -> np.ndarray:
    """Float bits as integers that increase with the value, so that ulp distance is a subtraction."""
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    i = a.view(ints).astype(np.int64)
    top = np.int64(np.iinfo(ints).max)
    # Negative floats have the sign bit set; flip them so the order is monotonic (-0.0 and +0.0 become equal).
    return np.where(i < 0, -(i & top), i)


def _ulp_distance(c: np.ndarray, g: np.ndarray, significant: np.ndarray) -> int | None:
    """Largest distance in units in the last place of c's dtype, over the `significant` elements (near-zero
    elements have tiny ulps: any rounding difference there is millions of ulps and says nothing)."""
    if c.dtype.kind != "f" or c.dtype.itemsize not in (2, 4, 8):
        return None
    g = g.astype(c.dtype)
    d = np.abs(_ordered_ints(c) - _ordered_ints(g))[significant]
    return int(d.max()) if d.size else 0


def _tolerance_key(case: GoldenCase, dtype: np.dtype) -> tuple[str, str | None]:
    golden = case.manifest["dtype"]
    if dtype == np.float64 and golden == "float64":
        return "float64", None
    if dtype in (np.float64, np.float32):
        return "float32", None
    return "float32", f"no tolerance is derived for {dtype}; using float32's (scale them with tolerance_scale)"


def _compare_point(name: str, g: np.ndarray, c: np.ndarray, tol: float) -> dict[str, Any]:
    row: dict[str, Any] = {"shape": list(g.shape), "candidate_shape": list(c.shape), "dtype": str(c.dtype),
                           "tolerance": tol}
    c64 = c.astype(np.float64)
    g64 = g.astype(np.float64)
    if not np.all(np.isfinite(c64)):
        bad = np.argwhere(~np.isfinite(c64))[0]
        # None rather than inf keeps the --json output standard JSON.
        row.update(status="fail", max_abs=None, max_rel=None, ulp=None, worst_index=[int(i) for i in bad],
                   golden_at_worst=float(g64[tuple(bad)]), candidate_at_worst=None,
                   note=f"non-finite values ({c64[tuple(bad)]} at {[int(i) for i in bad]})")
        return row
    d = np.abs(c64 - g64)
    if d.size == 0:
        row.update(status="pass", max_abs=0.0, max_rel=0.0, ulp=0, worst_index=[])
        return row
    worst = np.unravel_index(int(np.argmax(d)), d.shape)
    scale = float(np.max(np.abs(g64)))
    floor = max(1e-3 * scale, np.finfo(np.float64).tiny)
    row.update(
        max_abs=float(d[worst]),
        max_rel=float(np.max(d / np.maximum(np.abs(g64), floor))),
        ulp=_ulp_distance(c, g, np.abs(g64) >= floor),
        worst_index=[int(i) for i in worst],
        golden_at_worst=float(g64[worst]),
        candidate_at_worst=float(c64[worst]),
        status="pass" if float(d[worst]) <= tol else "fail",
    )
    return row


def compare_case(case: GoldenCase, candidate: dict[str, Any], mapping: Any = None, *, reshape: str | None = None,
                 tolerance_scale: float = 1.0, strict: bool = False) -> dict[str, Any]:
    """The report (a dict, JSON-ready) of `candidate` against `case`. See format_report for the text form."""
    mapping = load_mapping(mapping)
    if reshape is not None and reshape not in RESHAPES:
        raise GoldenError(f"unknown reshape {reshape!r}; known: {', '.join(RESHAPES)}")
    if not tolerance_scale > 0:
        raise GoldenError(f"tolerance scale must be positive, got {tolerance_scale}")
    arrays = {}
    for k, v in candidate.items():
        try:
            arrays[str(k)] = np.asarray(v)
        except Exception as exc:
            raise GoldenError(f"candidate array {k!r} cannot be read as an array ({exc}); pass NumPy arrays "
                              f"(torch: t.detach().cpu().numpy())") from None
        if arrays[str(k)].dtype.kind not in "biuf":
            raise GoldenError(f"candidate array {k!r} has dtype {arrays[str(k)].dtype}, not real numbers; pass the "
                              f"point's values as a float array")
    targets = apply_mapping(list(arrays), mapping)
    by_golden = {g: (c, r) for c, (g, r) in targets.items()}
    order = ["input"] + case.point_names
    rows, missing, notes = [], [], []
    key_notes: set[str] = set()
    for name in order:
        if name not in by_golden:
            if name != "input":  # the input is optional: it only checks the candidate's input rule
                missing.append(name)
            continue
        cand_name, rule_reshape = by_golden[name]
        g = case.arrays[name]
        c = arrays[cand_name]
        transform = rule_reshape
        if transform is None and reshape is not None and g.ndim == 4 and name not in ("input",) \
                and not name.endswith(".attn_probs"):
            transform = reshape
        key, note = _tolerance_key(case, c.dtype)
        if note:
            key_notes.add(note)
        if name == "input":
            tol = EPS[key] * float(np.max(np.abs(g)))  # the rule's values rounded to the candidate's dtype
        else:
            tol = case.point(name)["tolerance"][key] * tolerance_scale
        base = {"name": name, "candidate_name": cand_name, "transform": transform, "tolerance_dtype": key}
        if transform is not None:
            try:
                c = RESHAPES[transform](c, g.shape)
            except ValueError as exc:
                rows.append({**base, "status": "shape", "shape": list(g.shape), "candidate_shape": list(c.shape),
                             "dtype": str(c.dtype), "tolerance": tol,
                             "note": f"{transform} cannot apply to shape {list(c.shape)}: {exc}"})
                continue
        if c.shape != g.shape:
            rows.append({**base, "status": "shape", "shape": list(g.shape), "candidate_shape": list(c.shape),
                         "dtype": str(c.dtype), "tolerance": tol, "note": _shape_hint(g.shape, c.shape)})
            continue
        rows.append({**base, **_compare_point(name, g, c, tol)})
    extra = sorted(c for c, (g, _) in targets.items() if g not in order)
    notes.extend(sorted(key_notes))
    failing = [r for r in rows if r["status"] in ("fail", "shape")]
    first = failing[0]["name"] if failing else None
    compared = [r for r in rows if r["name"] != "input"]
    ok = not failing and bool(compared) and not (strict and (missing or extra))
    if not compared:
        notes.append("no candidate array matches a golden point: check the names or give a mapping")
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("pass", "fail", "shape")}
    counts.update(missing=len(missing), extra=len(extra))
    return {
        "golden": case.path,
        "golden_dtype": case.manifest["dtype"],
        "policy": case.policy,
        "mapping": mapping.name if mapping else None,
        "verdict": "pass" if ok else "fail",
        "first_failure": first,
        "counts": counts,
        "points": rows,
        "missing": missing,
        "extra": extra,
        "strict": strict,
        "tolerance_scale": tolerance_scale,
        "notes": notes,
    }


def _shape_hint(g: tuple[int, ...], c: tuple[int, ...]) -> str:
    msg = f"shape {list(c)} != golden {list(g)}"
    if len(g) == 4 and len(c) == 3 and c == (g[0], g[1] * g[2], g[3]):
        return msg + "; it looks like [B, L, C] tokens: map it with \"reshape\": \"BLC->BHWC\" or --reshape BLC->BHWC"
    if len(g) == 4 and c == (g[0], g[3], g[1], g[2]):
        return msg + "; it looks like NCHW: map it with \"reshape\": \"NCHW->NHWC\" or --reshape NCHW->NHWC"
    return msg


def compare(golden_dir: str | os.PathLike, candidate: Any, mapping: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Compare a candidate (a dict of arrays or a path) with the golden case in `golden_dir`; returns the report."""
    case = read_case(golden_dir)
    source = None if isinstance(candidate, dict) else os.fspath(candidate)
    arrays = candidate if source is None else load_candidate(source)
    report = compare_case(case, arrays, mapping, **kwargs)
    report["candidate"] = source
    return report


# ----------------------------------------------------------------------------------------------------------------
# Text.


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def summary_lines(report: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The lines under the per-point table, as (text, rich style): first failure, missing, extra, notes, verdict.

    Shared by the plain-text report (AssertionError, format_report) and the rich one (swinref golden compare).
    """
    out: list[tuple[str, str | None]] = []
    if report["first_failure"]:
        r = next(p for p in report["points"] if p["name"] == report["first_failure"])
        if r["status"] == "fail":
            where = (f" at {r['worst_index']}: golden {_num(r.get('golden_at_worst'))}, candidate "
                     f"{_num(r.get('candidate_at_worst'))}")
        else:
            where = f": {r['note']}" if r.get("note") else ""
        out.append((f"first failure (likely bug location): {r['name']} (candidate {r['candidate_name']}){where}",
                    "bold red"))
    if report["missing"]:
        out.append((f"missing ({len(report['missing'])}): {', '.join(report['missing'])}", None))
    if report["extra"]:
        out.append((f"extra, not in the golden case ({len(report['extra'])}): {', '.join(report['extra'])}", None))
    out += [(f"note: {note}", None) for note in report["notes"]]
    c = report["counts"]
    out.append((f"verdict: {report['verdict'].upper()} ({c['pass']} pass, {c['fail']} fail, {c['shape']} shape "
                f"mismatch, {c['missing']} missing, {c['extra']} extra)",
                "bold green" if report["verdict"] == "pass" else "bold red"))
    return out


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text: one line per point in execution order, the first failure marked."""
    head = (f"golden {report['golden']} ({report['golden_dtype']}, policy {report['policy']})"
            + (f", mapping {report['mapping']}" if report["mapping"] else ""))
    cols = ("point", "status", "max abs", "tolerance", "max rel", "ulp", "worst index")
    lines = [head, "  " + f"{cols[0]:<34} {cols[1]:<6} {cols[2]:>10} {cols[3]:>10} {cols[4]:>10} {cols[5]:>8}  "
             f"{cols[6]}"]
    for r in report["points"]:
        mark = ">>" if r["name"] == report["first_failure"] else "  "
        if r["status"] == "shape":
            lines.append(f"{mark}{r['name']:<34} SHAPE  {r['note']}")
            continue
        lines.append(f"{mark}{r['name']:<34} {r['status'].upper():<6} {_num(r['max_abs']):>10} "
                     f"{_num(r['tolerance']):>10} {_num(r['max_rel']):>10} {_num(r['ulp']):>8}  "
                     f"{r['worst_index']}" + (f"  ({r['note']})" if r.get("note") else ""))
    lines += [text for text, _ in summary_lines(report)]
    return "\n".join(lines)


def assert_matches(candidate_arrays: Any, golden_dir: str | os.PathLike, mapping: Any = None,
                   **kwargs: Any) -> dict[str, Any]:
    """Raise AssertionError with the report unless the candidate matches the golden case; return the report.

    `candidate_arrays`: a dict name -> array (anything np.asarray reads) or a path; `mapping`: 'timm', 'hf', a JSON
    path, a dict, or None. Keyword options as compare_case: reshape, tolerance_scale, strict.
    """
    report = compare(golden_dir, candidate_arrays, mapping, **kwargs)
    if report["verdict"] != "pass":
        raise AssertionError("candidate does not match the golden case\n" + format_report(report))
    return report
