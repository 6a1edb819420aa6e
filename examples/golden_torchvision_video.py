"""Check torchvision's Video Swin (SwinTransformer3d) against a swinref golden case, point by point, by hooking it.

    swinref golden export --variant swin3d_t --frames 8 --img 112 --out case
    python examples/golden_torchvision_video.py case   [--dtype float32|float64]

The pattern to copy into another project's tests:
  1. read the case (swinref.golden.read_case): config, weight rule, input;
  2. rebuild the weights (the seed rule -> canonical params -> torchvision's swin3d names) and build
     torchvision's SwinTransformer3d from the config;
  3. register a forward hook on every module that the mapping `torchvision_swin3d` names
     (swinref/golden/mappings/torchvision_swin3d.json);
  4. run the case's input and hand the hooked outputs to swinref.golden.assert_matches(..., mapping=...).

Exits 0 with a message when torch or torchvision is not installed; 0 when torchvision matches, 1 when it does
not, 2 when the case is not a Video Swin case.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a golden case directory of a Video Swin model (swinref golden export)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="torchvision's dtype")
    args = parser.parse_args(argv)
    try:
        import torch
        from torchvision.models.video.swin_transformer import SwinTransformer3d
    except ImportError as exc:
        print(f"skipped: this example needs torch and torchvision ({exc}); pip install torch torchvision")
        return 0

    import swinref
    from swinref.checkpoints.layouts import torchvision3d
    from swinref.golden import assert_matches, format_report, load_mapping, read_case
    from swinref.params import init_params

    case = read_case(args.case)
    cfg, man = case.config, case.manifest
    if not cfg.is_video:
        print(f"{args.case} is an image case; torchvision's SwinTransformer3d runs Video Swin cases")
        return 2

    # 1-2. The weights by the case's rule, under torchvision's names, in the requested dtype.
    weights = man["weights"]
    if weights["source"] == "seed":
        params = init_params(cfg, seed=weights["seed"], dtype="float64")
    else:
        params = dict(swinref.load(weights["path"], config=cfg, dtype="float64").params)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    model = SwinTransformer3d(patch_size=list(cfg.patch), embed_dim=cfg.embed_dim, depths=list(cfg.depths),
                              num_heads=list(cfg.num_heads), window_size=list(cfg.window), mlp_ratio=cfg.mlp_ratio,
                              num_classes=cfg.num_classes, stochastic_depth_prob=0.0).to(dtype).eval()
    state = {k: torch.from_numpy(v).to(dtype) for k, v in torchvision3d.from_canonical(params, cfg).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("relative_position_index")]  # torchvision derives it
    if missing or unexpected:
        print(f"weights do not fit torchvision's model: missing {missing}, unexpected {unexpected}")
        return 1

    # 3. Hooks under torchvision's module names; the mapping says which golden point each one is.
    mapping = load_mapping("torchvision_swin3d")
    wanted = set(case.point_names)
    arrays: dict[str, object] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            arrays[name] = output.detach().to(torch.float64 if args.dtype == "float64" else torch.float32).numpy()
        return hook

    for name, module in model.named_modules():
        found = mapping.match(name)
        if found is not None and found[0] in wanted:
            module.register_forward_hook(keep(name))

    # 4. The case's input; the report tells where torchvision first leaves the tolerance.
    with torch.no_grad():
        model(torch.from_numpy(case.arrays["input"]).to(dtype))
    try:
        report = assert_matches(arrays, args.case, mapping=mapping, strict=True)
    except AssertionError as exc:
        print(exc)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
