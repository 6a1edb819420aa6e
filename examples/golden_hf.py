"""Check Hugging Face transformers' SwinForImageClassification against a swinref golden case by hooking modules.

    python examples/golden_hf.py tests/data/golden/tiny_v1   [--dtype float32|float64]

The same pattern as examples/golden_timm.py with the mapping `hf`: tokens are [B, L, C] (the mapping reshapes
them), tuple outputs are picked by the mapping's "output" index, and attention probabilities need the eager
attention. Exits 0 with a message when torch or transformers is missing; 0 on a match, 1 otherwise, 2 when the
case is padded under timm's policy (Hugging Face pads, then rolls).

In float64 transformers 5.23 does not match beyond float32 precision: its eager attention computes the softmax in
float32 (softmax(..., dtype=torch.float32).to(query.dtype)), and the report names layers.0.blocks.0.attn, the first
point after that softmax. Compare Hugging Face in float32.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a golden case directory (swinref golden export ...)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    try:
        import torch
        from transformers import SwinConfig, SwinForImageClassification
    except ImportError as exc:
        print(f"skipped: this example needs torch and transformers ({exc}); pip install torch transformers")
        return 0

    from swinref.plan import plan
    from swinref.checkpoints.layouts import transformers as transformers_layout
    from swinref.golden import assert_matches, format_report, load_mapping, read_case
    from swinref.params import init_params

    case = read_case(args.case)
    cfg, man = case.config, case.manifest
    if cfg.version != 1 or man["weights"]["source"] != "seed":
        print("this example covers Swin V1 cases with seed-made weights")
        return 2
    if plan(cfg, policy=case.policy).needs_padding and case.policy != "hf":
        print(f"cannot check {args.case} with transformers: the case was exported with the window policy "
              f"'{case.policy}': export with --policy hf")
        return 2
    config = SwinConfig(image_size=list(cfg.img_size), patch_size=cfg.patch_size, num_channels=cfg.in_chans,
                        embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads),
                        window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
                        layer_norm_eps=cfg.layer_norm_eps, num_labels=cfg.num_classes, attn_implementation="eager")
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    # Cast before loading: load_state_dict copies into the existing tensors, in their dtype.
    model = SwinForImageClassification(config).to(dtype).eval()
    params = init_params(cfg, seed=man["weights"]["seed"], dtype="float64")
    # Canonical names -> transformers' own (swinref's layout module; V1: q/k/v/o_proj, mlp.fc1/fc2).
    state = {k: torch.from_numpy(v).to(dtype) for k, v in transformers_layout.from_canonical(params, cfg).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("relative_position_index")]
    if missing or unexpected:
        print(f"weights do not fit transformers' model: missing {missing}, unexpected {unexpected}")
        return 1

    mapping = load_mapping("hf")
    wanted = set(case.point_names)
    arrays: dict[str, object] = {}

    def keep(name: str, output_index: int | None):
        def hook(_module, _inputs, output):
            if output_index is not None:
                output = output[output_index]
            arrays[name] = output.detach().numpy()
        return hook

    for name, module in model.named_modules():
        found = mapping.match(name)
        if found is not None and found[0] in wanted:
            module.register_forward_hook(keep(name, found[1].output))
    with torch.no_grad():
        model(torch.from_numpy(case.arrays["input"]).to(dtype))
    try:
        report = assert_matches(arrays, args.case, mapping="hf", strict=True)
    except AssertionError as exc:
        print(exc)
        return 1
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
