"""The `swinref` command line: parse, call the library, render. Data goes to stdout, messages to stderr.

Every command that describes a model takes the same options (one reusable parent parser, `model_parser()`): a
model name positionally or with --variant, and any config field overridden (--img 800x1333, --window 12, ...).
Bad input is a SwinrefError: its message goes to stderr and the exit code is 2, like argparse's own errors.

This module imports nothing heavy at start-up: rich is imported when a table is rendered, and commands that need
NumPy import it inside their handler, so `swinref trace` and `swinref flops` answer quickly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from swinref.config import SwinConfig, get_config
from swinref.errors import ConfigError, InputError, SwinrefError

__all__ = ["main", "model_parser", "config_from_args", "build_parser"]

DEFAULT_VARIANT = "T"


# ---------------------------------------------------------------------------------------------------------------
# Model options, shared by every command that takes a model (later: predict, convert, golden).


def _sides(text: str) -> int | tuple[int, ...]:
    """An int (7), or one int per axis of a clip (8x7x7)."""
    parts = text.lower().split("x")
    if not all(p.strip().isdigit() for p in parts) or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"expected an integer (7) or one per axis T x H x W (8x7x7), got {text!r}")
    values = tuple(int(p) for p in parts)
    return values[0] if len(values) == 1 else values


def model_parser(positional: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the model choice and the config overrides; resolve it with `config_from_args`."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model")
    if positional:
        g.add_argument("model", nargs="?", default=None,
                       help="model name: T/S/B/L alias, registry name, timm name or Hugging Face id (default T)")
    g.add_argument("--variant", default=None, metavar="NAME", help="the model, as an option (default T)")
    g.add_argument("--img", default=None, metavar="SIZE", help="image size: 224, or H x W as 800x1333")
    g.add_argument("--frames", default=None, metavar="T", help="frames of a Video Swin clip (e.g. 32)")
    g.add_argument("--clip", default=None, metavar="TxHxW", help="Video Swin clip size, e.g. 32x224x224")
    g.add_argument("--window", type=_sides, default=None, metavar="M", help="window size M in tokens (video: 8x7x7)")
    g.add_argument("--embed-dim", type=int, default=None, metavar="C", help="channels of the first stage")
    g.add_argument("--depths", default=None, metavar="LIST", help="blocks per stage, e.g. 2,2,6,2")
    g.add_argument("--heads", default=None, metavar="LIST", help="heads per stage, e.g. 3,6,12,24")
    g.add_argument("--classes", type=int, default=None, metavar="K", help="classes of the head (0: no head)")
    g.add_argument("--patch", type=_sides, default=None, metavar="P", help="patch size in pixels (video: 2x4x4)")
    g.add_argument("--ape", action="store_const", const=True, default=None,
                   help="add an absolute position embedding after the patch embedding (official detection backbone)")
    return p


# The config overrides of model_parser(): (attribute, flag), the attribute being get_config's keyword.
_MODEL_OPTIONS = (("img", "--img"), ("frames", "--frames"), ("clip", "--clip"), ("window", "--window"), ("embed_dim", "--embed-dim"), ("depths", "--depths"),
                  ("heads", "--heads"), ("classes", "--classes"), ("patch", "--patch"), ("ape", "--ape"))


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides given on the command line (unset options left out)."""
    return {attr: getattr(args, attr) for attr, _ in _MODEL_OPTIONS if getattr(args, attr) is not None}


def config_from_args(args: argparse.Namespace) -> SwinConfig:
    positional = getattr(args, "model", None)
    variant = getattr(args, "variant", None)
    if positional and variant and get_config(positional).name != get_config(variant).name:
        raise ConfigError(f"two models given: {positional!r} and --variant {variant!r}; give only one")
    name = positional or variant or DEFAULT_VARIANT
    return get_config(name, **_model_overrides(args))


def policy_parser() -> argparse.ArgumentParser:
    """A parent parser with the window policy (--padding is its name in swinref 0.1: pad, timm, strict)."""
    from swinref.plan import DEFAULT_POLICY, POLICIES, POLICY_ALIASES

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--policy", default=None, choices=[*POLICIES, *POLICY_ALIASES], metavar="NAME",
                   help=f"window policy, the peer whose windows, shifts and padding to reproduce at any input size: "
                        f"{', '.join(POLICIES)} (default {DEFAULT_POLICY}; see docs/peer-semantics.md)")
    p.add_argument("--padding", dest="policy", choices=[*POLICIES, *POLICY_ALIASES], help=argparse.SUPPRESS)
    return p


def backbone_parser() -> argparse.ArgumentParser:
    """A parent parser with --backbone: the dense-prediction backbone (swinref.analysis backbone=True)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--backbone", action="store_true",
                   help="the detection / segmentation backbone: per-stage output norms, no final norm, pooling or "
                        "head; window policy 'detection' unless --policy says otherwise")
    return p


def budget_parser() -> argparse.ArgumentParser:
    """A parent parser with --max-memory: a budget every forward pass is checked against (swinref.budget)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="refuse (or split the batch) when a forward pass would need more, weights included: 4GiB, "
                        "512MB, ... (default: the memory available)")
    return p


def _positive(what: str) -> Callable[[str], int]:
    """An argparse type: a positive integer, the error naming the option (`what`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {value}")
        return value

    return parse


_batch = _positive("batch")


# ---------------------------------------------------------------------------------------------------------------
# Commands: each returns data (a dict or list) and renders it, or prints JSON.


def cmd_configs(args: argparse.Namespace) -> int:
    import fnmatch

    from swinref.analysis.params import count_params
    from swinref.config import ALIASES, PEER_NAMES, REGISTRY

    aliases = {v: k for k, v in ALIASES.items()}
    others = {**ALIASES, **PEER_NAMES}
    pattern = args.pattern.lower()
    rows = []
    for name, cfg in REGISTRY.items():
        peers = [peer for peer, target in PEER_NAMES.items() if target == name]
        if not fnmatch.fnmatchcase(name, pattern) and not any(
                fnmatch.fnmatchcase(other.lower(), pattern) for other, target in others.items() if target == name):
            continue
        rows.append({**cfg.to_dict(), "alias": aliases.get(name), "peer_names": peers,
                     "params": count_params(cfg).total})
    if not rows:
        raise ConfigError(f"no configuration matches {args.pattern!r}; run `swinref configs` for all of them "
                          f"(patterns as in the shell: 'swin*v2*')")
    if args.json:
        return _print_json(rows)
    from swinref.analysis import render

    render.configs(rows)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from swinref.analysis.trace import analysis_policy, trace

    from swinref.plan import plan

    cfg = config_from_args(args)
    steps = trace(cfg, batch=args.batch, policy=args.policy, backbone=args.backbone)
    mp = plan(cfg, policy=analysis_policy(args.policy, args.backbone))
    if args.json:
        return _print_json({"policy": mp.policy.name, "peer": mp.peer, "refusal": mp.refusal,
                            "backbone": args.backbone, "steps": [s.to_dict() for s in steps]})
    from swinref.analysis import render

    render.trace(cfg, steps, mp)
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from swinref.analysis.flops import complexity, count_flops, parse_sweep, sweep

    cfg = config_from_args(args)
    sizes = parse_sweep(args.sweep) if args.sweep else None
    report = count_flops(cfg, convention=args.convention, batch=args.batch, policy=args.policy,
                         backbone=args.backbone)
    data = report.to_dict()
    data["complexity"] = complexity(cfg)
    if sizes is not None:
        data["sweep"] = sweep(cfg, sizes)
    if args.json:
        if not args.items:
            data.pop("items")
        return _print_json(data)
    from swinref.analysis import render

    if sizes is not None:
        render.sweep(cfg, data["sweep"])
        return 0
    render.flops(cfg, report, data, show_items=args.items, show_blocks=args.blocks)
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from swinref.analysis.flops import count_flops
    from swinref.analysis.params import count_params

    cfg = config_from_args(args)
    report = count_params(cfg)
    data = report.to_dict()
    if not args.tensors:
        data.pop("tensors")
    flops = count_flops(cfg)
    data["macs"], data["flops"] = flops.macs, flops.flops
    if args.json:
        return _print_json(data)
    from swinref.analysis import render

    render.params(cfg, report, show_tensors=args.tensors)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from swinref.analysis.summary import summary

    cfg = config_from_args(args)
    report = summary(cfg, batch=args.batch, policy=args.policy, backbone=args.backbone)
    if args.json:
        return _print_json(report.to_dict())
    from swinref.analysis import render

    render.summary(cfg, report)
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    from swinref.analysis.flops import count_flops
    from swinref.analysis.memory import memory

    cfg = config_from_args(args)
    report = memory(cfg, batch=args.batch, dtype=args.dtype, policy=args.policy, backbone=args.backbone)
    data = report.to_dict()
    flops = count_flops(cfg, batch=args.batch, policy=args.policy, backbone=args.backbone)
    data["params"], data["macs"], data["flops"] = flops.params, flops.macs, flops.flops
    if args.json:
        return _print_json(data)
    from swinref.analysis import render

    render.memory(cfg, report)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from swinref.checkpoints import convert
    from swinref.config import describe

    if args.inflate:
        return _cmd_inflate(args)
    if args.config and args.variant and get_config(args.config).name != get_config(args.variant).name:
        raise ConfigError(f"two models given: --config {args.config!r} and --variant {args.variant!r}; give only one")
    report = convert(args.input, args.output, config=args.config or args.variant, dtype=args.dtype,
                     layout=args.layout, backbone_prefix=args.backbone_prefix, force=args.force,
                     **_model_overrides(args))
    cfg = report.config
    _say_transferred(report.resized, report.notes)
    if args.json:
        return _print_json({"input": args.input, "output": args.output, "config": cfg.to_dict(),
                            "resized": list(report.resized), "layout": args.layout, "read_layout": report.layout,
                            "notes": list(report.notes)})
    names = "" if args.layout == "swinref" else f" in {args.layout}'s names" + (
        " under backbone." if args.backbone_prefix else "")
    sys.stdout.write(f"wrote {args.output}{names}: {describe(cfg)}\n")
    return 0


WEIGHTS_HELP = (
    "swinref predicts with real weights only: pass --weights with a checkpoint file or directory. Official Swin "
    "weights are published by microsoft/Swin-Transformer (GitHub releases, e.g. swin_tiny_patch4_window7_224.pth), "
    "timm (Hugging Face hub, timm/swin_tiny_patch4_window7_224.ms_in1k: model.safetensors), Hugging Face "
    "transformers (microsoft/swin-tiny-patch4-window7-224: a directory with config.json and model.safetensors) "
    "and torchvision (swin_t-704ceda3.pth). Accepted: .pth/.bin (read without torch), .safetensors, .npz, and "
    "Hugging Face model directories; download one on a machine with network access."
)


def _predictor(args: argparse.Namespace, outputs: tuple[str, ...], **extra: Any):
    """The Predictor `predict` and `embed` share: the checkpoint and model options of the command line."""
    if not args.weights:
        raise ConfigError(f"no --weights given. {WEIGHTS_HELP}")
    from swinref.predictor import Predictor

    crop = None if args.crop == "auto" else args.crop == "yes"
    predictor = Predictor(args.weights, outputs=outputs, crop=crop, on_error="skip", config=args.variant,
                          dtype=args.dtype, device=args.device, policy=args.policy, threads=args.threads,
                          max_memory=args.max_memory, **extra, **_model_overrides(args))
    _say_transferred(predictor.model.report.resized, predictor.model.report.notes)
    return predictor


def _progress(total: int, label: str):
    """A rich progress bar on stderr, shown on a terminal only (a log file gets the per-file messages, no bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = _stderr_console()
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                    transient=True, disable=not console.is_terminal or total <= 1)


def _skipped_code(failures: Sequence[dict[str, str]], done: int) -> int:
    """Report the files a run over files skipped; its exit code: 0, or 1 when some were skipped. When no file could
    be read at all, that is an error (exit 2)."""
    if len(failures) == 1 and not done:
        raise InputError(failures[0]["error"])
    for failure in failures:
        sys.stderr.write(f"swinref: skipped {failure['image']}: {failure['error']}\n")
    if failures and not done:
        raise InputError(f"none of the {len(failures)} images could be read (listed above); check the files")
    if failures:
        sys.stderr.write(f"swinref: {len(failures)} of {len(failures) + done} images skipped (listed above)\n")
    return 1 if failures else 0


def cmd_predict(args: argparse.Namespace) -> int:
    from swinref.inputs import find_images
    from swinref.predict import predict_files
    from swinref.video import is_clip

    if args.images and all(is_clip(p) for p in args.images):  # Video Swin on clips: swinref.video
        return _predict_clips(args)
    paths = find_images(args.images)
    predictor = _predictor(args, ("top",), top=args.top)
    fmt = "json" if args.json else args.format
    with _progress(len(paths), "classifying") as progress:
        task = progress.add_task("classifying", total=len(paths))
        results, failures = predict_files(predictor, paths, batch=args.batch,
                                          on_batch=lambda n: progress.advance(task, n))
    code = _skipped_code(failures, len(results))
    if fmt == "json":
        _print_json({"model": predictor.model.config.name, "config": predictor.model.config.to_dict(),
                     "results": results, "skipped": failures})
    elif fmt == "jsonl":
        for item in results:
            sys.stdout.write(json.dumps(item) + "\n")
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image", "rank", "class", "name", "probability"])
        for item in results:
            for rank, entry in enumerate(item["top"], 1):
                writer.writerow([item["image"], rank, entry["index"], entry["name"], repr(entry["probability"])])
    else:
        _render_predictions(results)
    return code


def cmd_embed(args: argparse.Namespace) -> int:
    from swinref.embed import embed_files, partial_dir
    from swinref.inputs import find_images

    paths = find_images(args.images)
    predictor = _predictor(args, (args.values,))
    with _progress(len(paths), "embedding") as progress:
        task = progress.add_task("embedding", total=len(paths))
        report = embed_files(predictor, paths, args.out, batch_size=args.batch, values=args.values, force=args.force,
                             on_batch=lambda n: progress.advance(task, n))
    code = _skipped_code(report.skipped, report.rows)
    if args.json:
        _print_json({"model": predictor.model.config.name, **vars(report)})
        return code
    resumed = f", {report.reused} reused from the interrupted run in {partial_dir(args.out)}" if report.reused else ""
    sys.stdout.write(f"wrote {args.out}: {report.rows} x {report.width} {args.values} "
                     f"({predictor.model.config.name}{resumed})\n")
    return code


def _render_predictions(results: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for item in results:
        table = Table(title=item["image"], title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("class", justify="right")
        table.add_column("name")
        table.add_column("probability", justify="right")
        for rank, entry in enumerate(item["top"], 1):
            table.add_row(str(rank), str(entry["index"]), entry["name"], f"{entry['probability']:.4f}")
        console.print(table)


def _add_inflate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inflate", nargs="?", const="8x7x7", default=None, metavar="TxHxW",
                   help="inflate a 2-D Swin V1 checkpoint to a Video Swin backbone with this window (default 8x7x7), "
                        "the official Video Swin rule (swinref.checkpoints.video.inflate)")
    p.add_argument("--temporal-patch", type=int, default=2, metavar="PT",
                   help="--inflate: frames per patch (default 2)")


def _cmd_inflate(args: argparse.Namespace) -> int:
    from swinref.checkpoints import inflate_checkpoint
    from swinref.config import describe, parse_int_list

    window = parse_int_list(args.inflate.replace("x", ","), "--inflate window")
    if len(window) != 3:
        raise ConfigError(f"--inflate takes a window T x H x W, e.g. 8x7x7; got {args.inflate!r}")
    if args.backbone_prefix or _model_overrides(args):
        raise ConfigError("--inflate reads the 2-D checkpoint as it is: drop --backbone-prefix and the model options")
    cfg, report = inflate_checkpoint(args.input, args.output, window=window, patch_t=args.temporal_patch,
                                     config=args.config or args.variant, layout=args.layout, dtype=args.dtype,
                                     force=args.force)
    _say_transferred(report.resized, report.notes)
    if args.json:
        return _print_json({"input": args.input, "output": args.output, "config": cfg.to_dict(),
                            "layout": args.layout, "read_layout": report.layout})
    sys.stdout.write(f"wrote {args.output} (inflated from {describe(report.config)}): {describe(cfg)}\n")
    return 0


def _predict_clips(args: argparse.Namespace) -> int:
    """`swinref predict` on video files: a Video Swin checkpoint, the official evaluation views (swinref.video)."""
    import swinref
    from swinref.video import predict_clips

    if not args.weights:
        raise ConfigError(f"no --weights given. {WEIGHTS_HELP}")
    model = swinref.load(args.weights, config=args.variant, dtype=args.dtype, device=args.device, policy=args.policy,
                         **_model_overrides(args))
    _say_transferred(model.report.resized, model.report.notes)
    with _progress(len(args.images), "classifying clips") as progress:
        task = progress.add_task("classifying clips", total=len(args.images))
        results = []
        for item in predict_clips(model, args.images, top=args.top, batch=args.batch):
            results.append(item)
            progress.advance(task, 1)
    done = [r for r in results if "top" in r]
    failures = [{"image": r["clip"], "error": r["error"]} for r in results if "error" in r]
    code = _skipped_code(failures, len(done))
    if args.json or args.format == "json":
        _print_json({"model": model.config.name, "config": model.config.to_dict(), "results": done,
                     "skipped": [{"clip": f["image"], "error": f["error"]} for f in failures]})
        return code
    _render_predictions([{"image": f"{r['clip']} ({r['views']} views)", "top": r["top"]} for r in done])
    return code


def _say_transferred(resized: Sequence[str], notes: Sequence[str]) -> None:
    """What a load at another window or image size changed (swinref.transfer), and what the file could not say."""
    for line in resized:
        sys.stderr.write(f"swinref: resized {line}\n")
    for line in notes:
        sys.stderr.write(f"swinref: note: {line}\n")


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


# golden: export a case, compare a candidate with one (swinref.golden; docs/golden.md) ----------------------------

def _export_command(args: argparse.Namespace) -> str:
    """The export command in canonical form, recorded in the manifest so a stale case names its own rebuild."""
    import shlex

    words = ["swinref", "golden", "export"]
    if args.variant:
        words += ["--variant", args.variant]
    for attr, flag in _MODEL_OPTIONS:
        value = getattr(args, attr)
        if value is True:
            words.append(flag)  # a switch (--ape)
        elif value is not None:
            words += [flag, str(value)]
    if args.weights is not None:
        words += ["--weights", args.weights]
    else:
        words += ["--seed", str(0 if args.seed is None else args.seed)]
    if args.input_seed is not None:
        words += ["--input-seed", str(args.input_seed)]
    words += ["--dtype", args.dtype, "--batch", str(args.batch)]
    if args.policy is not None:
        words += ["--policy", args.policy]
    if args.attn_probs:
        words += ["--attn-probs", args.attn_probs]
    if args.backbone or args.out_indices is not None:
        words.append("--backbone")
    if args.out_indices is not None:
        words += ["--out-indices", *map(str, args.out_indices)]
    if args.device != "cpu":
        words += ["--device", args.device]
    words += ["--out", args.out]
    return shlex.join(words)


def _cmd_golden_export(args: argparse.Namespace) -> int:
    from swinref.golden import export_case

    overrides = _model_overrides(args)
    cfg = None
    if args.weights is None or args.variant is not None:
        cfg = config_from_args(args)
    elif overrides:
        # The model is detected from the checkpoint; overrides (e.g. --img) apply to what was detected.
        import swinref

        cfg = swinref.load(args.weights, dtype="float64").config.replace(**overrides)
    manifest = export_case(args.out, cfg, seed=args.seed, weights=args.weights, dtype=args.dtype, batch=args.batch,
                           device=args.device, policy=args.policy, attn_probs=args.attn_probs or (),
                           input_seed=args.input_seed, force=args.force, command=_export_command(args),
                           backbone=args.backbone, out_indices=args.out_indices, max_memory=args.max_memory,
                           notify=lambda line: sys.stderr.write(f"swinref: {line}\n"))
    if args.json:
        keys = ("format", "format_version", "config", "dtype", "policy", "command")
        return _print_json({"out": args.out, **{k: manifest[k] for k in keys},
                            "backbone": manifest.get("backbone", False),
                            "points": [p["name"] for p in manifest["points"]]})
    sys.stderr.write(f"wrote {args.out}: {len(manifest['points'])} points, {manifest['dtype']}, "
                     f"window policy {manifest['policy']}\n")
    return 0


def _cmd_golden_compare(args: argparse.Namespace) -> int:
    from swinref.golden import compare

    report = compare(args.golden, args.candidate, args.mapping, reshape=args.reshape,
                     tolerance_scale=args.tolerance_scale, strict=args.strict)
    if args.json:
        _print_json(report)
    else:
        from swinref.golden import render

        render.report(report)
    return 0 if report["verdict"] == "pass" else 1


def _add_golden(sub: Any, out: argparse.ArgumentParser) -> None:
    g = sub.add_parser("golden", help="golden outputs for other implementations: export a case, compare with one")
    gsub = g.add_subparsers(dest="golden_command", metavar="{export,compare}")
    gsub.required = True
    p = gsub.add_parser("export", parents=[model_parser(positional=False), out, policy_parser(), backbone_parser(),
                                           budget_parser()],
                        help="run a model on the rule-made input and write every intermediate point")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", default=None, metavar="CKPT", help="a checkpoint (any format swinref reads)")
    src.add_argument("--seed", type=int, default=None, metavar="N",
                     help="generate the weights by swinref's counter rule (default 0)")
    p.add_argument("--input-seed", type=int, default=None, metavar="N",
                   help="seed of the input rule (default: --seed, or 0 with --weights)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="dtype of the case (float64)")
    p.add_argument("--batch", type=_batch, default=1, metavar="B", help="images in the input (default 1)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--attn-probs", default=None, metavar="BLOCKS",
                   help="also keep the attention probabilities of these blocks: layers.0.blocks.1,... or all")
    p.add_argument("--out", required=True, metavar="DIR", help="the case directory to write")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--out-indices", type=int, nargs="+", default=None, metavar="I",
                   help="backbone mode: the stages whose outputs to write as outs.I (default with --backbone: all)")
    p.set_defaults(handler=_cmd_golden_export)
    p = gsub.add_parser("compare", parents=[out], help="compare a candidate's arrays with a golden case")
    p.add_argument("golden", metavar="GOLDEN_DIR", help="a case written by `swinref golden export`")
    p.add_argument("candidate", metavar="CANDIDATE",
                   help="a .npz or .safetensors file, a directory of .npy files, or another exported case")
    p.add_argument("--mapping", default=None, metavar="timm|hf|mmdet|hf_backbone|PATH",
                   help="rename the candidate's arrays: a built-in mapping or a JSON mapping file")
    p.add_argument("--reshape", default=None, metavar="SPEC",
                   help="layout of the candidate's token maps: BLC->BHWC, BLC->BCHW, BCL->BHWC or NCHW->NHWC")
    p.add_argument("--tolerance-scale", type=float, default=1.0, metavar="X",
                   help="multiply every recommended tolerance by X (default 1)")
    p.add_argument("--strict", action="store_true", help="missing or extra points fail the comparison")
    p.set_defaults(handler=_cmd_golden_compare)


def _print_json(data: Any) -> int:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    return 0


def _dataset_parser() -> argparse.ArgumentParser:
    """The options `predict` and `embed` share: images, checkpoint, batches, threads, preprocessing."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively) and glob patterns (quote them; ** crosses "
                        "folders); any format Pillow reads")
    p.add_argument("--weights", default=None, metavar="CKPT",
                   help="checkpoint: official/timm/torchvision .pth, .safetensors, .npz or a Hugging Face directory")
    p.add_argument("--batch-size", "--batch", dest="batch", type=_batch, default=8, metavar="B",
                   help="images per forward pass (default 8)")
    p.add_argument("--threads", type=_batch, default=None, metavar="N",
                   help="threads for BLAS and swinref's kernels (default: the machine's settings)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="compute dtype")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu (NumPy) or cuda[:N] (CuPy)")
    p.add_argument("--crop", default="auto", choices=["auto", "yes", "no"],
                   help="centre crop as the official evaluation at 224 (auto: crop up to 256, resize at 384)")
    return p


# ---------------------------------------------------------------------------------------------------------------
# swinref show: pictures of windows, masks, reach and attention (swinref.show).


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 3,5; got {text!r}") from None


def _head(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a head is a number from 0, or 'all'; got {text!r}") from None


def _show_model(args: argparse.Namespace) -> tuple[SwinConfig, Any]:
    """The config, and for attention pictures the model (a checkpoint, or random weights when none is given)."""
    if args.kind not in ("attention", "rollout"):
        return config_from_args(args), None
    import swinref

    if args.weights:
        given = getattr(args, "variant", None)
        model = swinref.load(args.weights, config=given, policy=args.policy, **_model_overrides(args))
        return model.config, model
    cfg = config_from_args(args)
    return cfg, swinref.random_model(cfg, policy=args.policy)


def _show_image(path: str | None, size: tuple[int, ...]) -> Any:
    if path is None:
        return None
    import numpy as np
    from PIL import Image

    from swinref.preprocess import load_image

    return np.asarray(load_image(path).resize((size[1], size[0]), Image.BICUBIC))


def _cmd_show(args: argparse.Namespace) -> int:
    from swinref import show

    cfg, model = _show_model(args)
    if args.kind in ("attention", "rollout") and not args.image:
        raise ConfigError(f"swinref show {args.kind} draws on an image: give --image FILE (and --weights CKPT for a "
                          "trained model; without it the weights are random)")
    sizes = None
    if args.sizes:
        from swinref.analysis.flops import parse_sweep

        sizes = parse_sweep(args.sizes)
    if args.kind == "reach-models":
        given = getattr(args, "variant", None)
        pic = show.reach_by_model(args.img or args.clip, args.policy, None if given is None else [given])
    else:
        pic = show.picture(args.kind, cfg, None, args.policy, stage=args.stage, block=args.block,
                           window=args.window_index, token=args.token, pixel=args.pixel, head=args.head,
                           model=model, image=_show_image(args.image, cfg.img_size), sizes=sizes)
    if model is not None and not args.weights:
        pic = show.Picture(pic.kind, pic.title + " (random weights)", pic.arrays, pic.plan, pic.image)
    for path in args.out:
        show.save(pic, path)
        sys.stderr.write(f"wrote {path}\n")
    if args.json:
        return _print_json({"kind": pic.kind, "title": pic.title, **show.jsonable(pic)})
    if not args.out:
        from rich.console import Console

        Console(width=80, highlight=False).print(show.terminal(pic))
    return 0


def _add_show(sub: Any, out: argparse.ArgumentParser, policy: argparse.ArgumentParser) -> None:
    from swinref.analysis.windows import PICTURES

    p = sub.add_parser("show", parents=[model_parser(positional=False), out, policy],
                       help="pictures: windows, shift regions, masks, counts, complexity, reach, attention, rollout")
    p.add_argument("kind", choices=PICTURES, help="what to draw")
    p.add_argument("--stage", type=int, default=0, metavar="S", help="stage (default 0)")
    p.add_argument("--block", type=int, default=1, metavar="J", help="block in the stage (default 1, shifted)")
    p.add_argument("--window-index", type=int, default=None, metavar="W",
                   help="mask: which window of the block (default the last, with the most regions)")
    p.add_argument("--token", type=_ints, default=None, metavar="I,J", help="a token of the block's map")
    p.add_argument("--pixel", type=_ints, default=None, metavar="Y,X", help="or a pixel of the image")
    p.add_argument("--head", type=_head, default=None, metavar="H",
                   help="attention head, or 'all' for every head and the mean (default the mean)")
    p.add_argument("--image", default=None, metavar="FILE", help="attention, rollout: the image (resized to --img)")
    p.add_argument("--weights", default=None, metavar="CKPT", help="attention, rollout: a checkpoint (default: "
                   "random weights)")
    p.add_argument("--sizes", default=None, metavar="START:STOP[:STEP]", help="complexity: square sizes")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="write the figure as .png or .svg (repeatable; needs swinref[viz]); default: the terminal")
    p.set_defaults(handler=_cmd_show)


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from swinref.analysis.flops import CONVENTIONS
    from swinref.analysis.memory import DTYPE_BYTES

    parser = argparse.ArgumentParser(
        prog="swinref", description="Swin Transformer reference: shape traces, parameter, FLOP and memory counts.")
    from swinref import __version__

    parser.add_argument("--version", action="version", version=f"swinref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    models = model_parser()
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print JSON to stdout instead of tables")
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument("--batch", type=_batch, default=1, metavar="B", help="batch size (default 1)")

    p = sub.add_parser("configs", parents=[out], help="list the registered configurations")
    p.add_argument("pattern", nargs="?", default="*",
                   help="only the names (or timm / torchvision names) matching this shell pattern, e.g. 'swin*v2*'")
    p.set_defaults(handler=cmd_configs)
    policy = policy_parser()
    backbone = backbone_parser()
    p = sub.add_parser("trace", parents=[models, out, batch, policy, backbone],
                       help="the shape after every step of the model, with each block's windows, shifts and padding")
    p.set_defaults(handler=cmd_trace)
    p = sub.add_parser("flops", parents=[models, out, batch, policy, backbone],
                       help="MACs and FLOPs per layer and stage, under a chosen convention")
    p.add_argument("--convention", default="official", choices=list(CONVENTIONS),
                   help="what to count (default official); see docs/flops.md")
    p.add_argument("--blocks", action="store_true", help="also show one row per block")
    p.add_argument("--items", action="store_true", help="show (and put in --json) every counted term")
    p.add_argument("--sweep", default=None, metavar="START:STOP[:STEP]",
                   help="paper complexity of MSA vs W-MSA over square sizes, e.g. 224:1024:32")
    p.set_defaults(handler=cmd_flops)
    p = sub.add_parser("params", parents=[models, out], help="exact parameter counts per component")
    p.add_argument("--tensors", action="store_true", help="list every parameter tensor")
    p.set_defaults(handler=cmd_params)
    p = sub.add_parser("summary", parents=[models, out, batch, policy, backbone],
                       help="torchinfo-style: every layer's output shape, parameters and multiply-adds")
    p.set_defaults(handler=cmd_summary)
    p = sub.add_parser("memory", parents=[models, out, batch, policy, backbone],
                       help="attention scores and activations per stage: the largest live set of one block")
    p.add_argument("--dtype", default="float32", choices=list(DTYPE_BYTES), help="element type (default float32)")
    p.set_defaults(handler=cmd_memory)
    p = sub.add_parser("convert", parents=[model_parser(positional=False), out],
                       help="read a checkpoint (official, timm, Hugging Face, torchvision, OpenMMLab, detectron2 "
                            ".pkl) and write swinref's .safetensors or .npz, config included, or a peer's names")
    p.add_argument("input", metavar="IN",
                   help="a .pth/.bin/.pkl/.safetensors/.npz file or a Hugging Face model directory")
    p.add_argument("output", metavar="OUT", help="the file to write: .safetensors or .npz")
    p.add_argument("--layout", default="swinref",
                   choices=["swinref", "official", "openmmlab", "timm", "transformers", "torchvision",
                            "torchvision3d", "mmaction"],
                   help="the names to write: swinref's own file with its config (default), or a peer's state dict "
                        "for safetensors.torch.load_file + load_state_dict (no config stored)")
    p.add_argument("--backbone-prefix", action="store_true",
                   help="--layout official/openmmlab: a detection backbone's file, names under 'backbone.' (needs the "
                        "per-stage output norms norm0..)")
    p.add_argument("--config", default=None, metavar="NAME",
                   help="the model's registered name, instead of detecting it (same as --variant)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "float64"],
                   help="cast the floating-point weights (default: keep the stored dtype)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    _add_inflate_options(p)
    p.set_defaults(handler=_cmd_convert)
    p = sub.add_parser("predict", parents=[model_parser(positional=False), out, policy, _dataset_parser(),
                                           budget_parser()],
                       help="classify images with a checkpoint (official evaluation preprocessing, top-k)")
    p.add_argument("--top", type=_positive("the number of classes to show"), default=5, metavar="K",
                   help="classes to show per image (default 5)")
    p.add_argument("--format", default="table", choices=["table", "json", "jsonl", "csv"],
                   help="table (default), json (one document, as --json), jsonl (one line per image) or csv (one "
                        "row per image and rank)")
    p.set_defaults(handler=cmd_predict)
    p = sub.add_parser("embed", parents=[model_parser(positional=False), out, policy, _dataset_parser(),
                                         budget_parser()],
                       help="one vector per image (pooled features or logits) into .parquet, .npy or .safetensors; "
                            "an interrupted run resumes")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output: .parquet (path + vector columns; needs swinref[parquet]), .safetensors (paths in "
                        "the metadata) or .npy (paths one per line in NAME.paths.txt beside NAME.npy)")
    p.add_argument("--values", default="embedding", choices=["embedding", "logits"],
                   help="embedding: the pooled features before the head (default); logits: the classifier's")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(handler=cmd_embed)
    _add_golden(sub, out)
    _add_show(sub, out, policy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, message already on stderr)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except SwinrefError as exc:
        sys.stderr.write(f"swinref: error: {exc}\n")
        return 2
    except BrokenPipeError:  # `swinref trace | head`
        return 0
    except MemoryError:  # what the memory guard's forecast did not foresee (another process took the memory meanwhile)
        sys.stderr.write("swinref: error: out of memory; give a smaller --img or --batch-size, or a --max-memory "
                         "budget (see `swinref memory`)\n")
        return 2
    except KeyboardInterrupt:  # outputs are written under a temporary name: nothing half-written is left
        sys.stderr.write("swinref: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
