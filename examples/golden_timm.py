"""Check timm's SwinTransformer against a swinref golden case, point by point, by hooking timm's modules.

    python examples/golden_timm.py tests/data/golden/tiny_v1_timm_pad   [--dtype float32|float64]

The pattern to copy into another project's tests:
  1. read the case (swinref.golden.read_case): config, window policy, weight rule, input;
  2. rebuild the weights (the seed rule -> canonical params -> timm names) and build timm's model from the config;
  3. register a forward hook on every module that the mapping `timm` names (swinref/golden/mappings/timm.json);
  4. run the case's input and hand the hooked outputs to swinref.golden.assert_matches(..., mapping="timm").

Exits 0 with a message when torch or timm is not installed; 0 when timm matches, 1 when it does not, 2 when the
case cannot be checked with timm (Swin V2, or a padded case exported with a window policy other than timm's).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a golden case directory (swinref golden export ... --policy timm)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="timm's dtype")
    args = parser.parse_args(argv)
    try:
        import torch
        from timm.models.swin_transformer import SwinTransformer
    except ImportError as exc:
        print(f"skipped: this example needs torch and timm ({exc}); pip install torch timm")
        return 0

    from swinref.plan import plan
    from swinref.golden import assert_matches, format_report, load_mapping, read_case, timm_kwargs, timm_state_dict
    from swinref.params import init_params

    case = read_case(args.case)
    cfg, man = case.config, case.manifest
    if cfg.version != 1:
        print(f"cannot check {args.case} with timm's SwinTransformer: the case is Swin V{cfg.version}")
        return 2
    if plan(cfg, policy=case.policy).needs_padding and case.policy != "timm":
        print(f"cannot check {args.case} with timm: its size needs padding and the case was exported with the "
              f"window policy '{case.policy}', not timm's (roll, then pad); export with --policy timm")
        return 2

    # 1-2. The weights by the case's rule, under timm's names, in the requested dtype.
    weights = man["weights"]
    if weights["source"] == "seed":
        params = init_params(cfg, seed=weights["seed"], dtype="float64")
    else:
        import swinref

        params = dict(swinref.load(weights["path"], config=cfg, dtype="float64").params)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    model = SwinTransformer(**timm_kwargs(cfg)).to(dtype).eval()
    state = {k: torch.from_numpy(v).to(dtype) for k, v in timm_state_dict(params).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # timm derives the relative position index and the shift masks itself; nothing else may be missing.
    missing = [k for k in missing if not k.endswith(("relative_position_index", "attn_mask"))]
    if missing or unexpected:
        print(f"weights do not fit timm's model: missing {missing}, unexpected {unexpected}")
        return 1

    # 3. Hooks under timm's module names; the mapping says which golden point each one is.
    mapping = load_mapping("timm")
    wanted = set(case.point_names)
    arrays: dict[str, object] = {}

    def keep(name: str, output_index: int | None):
        def hook(_module, _inputs, output):
            if output_index is not None:
                output = output[output_index]
            arrays[name] = output.detach().to(torch.float64 if args.dtype == "float64" else torch.float32).numpy()
        return hook

    for name, module in model.named_modules():
        found = mapping.match(name)
        if found is None or found[0] not in wanted:
            continue
        if found[0].endswith(".attn_probs"):
            # The probabilities exist only on timm's unfused path (softmax -> attn_drop); the fused kernel hides them.
            model.get_submodule(name.rsplit(".attn_drop", 1)[0]).fused_attn = False
        module.register_forward_hook(keep(name, found[1].output))

    # 4. Run and compare with the case's recommended tolerances.
    x = torch.from_numpy(case.arrays["input"]).to(dtype)
    with torch.no_grad():
        model(x)
    try:
        report = assert_matches(arrays, args.case, mapping="timm", strict=True)
    except AssertionError as exc:
        print(exc)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
