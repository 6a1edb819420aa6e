"""Golden outputs of the Swin Transformer for other implementations: export a case, compare a candidate with it.

    swinref golden export --variant T --seed 0 --out case/          # or export_case(...)
    swinref golden compare case/ my_arrays.npz --mapping timm       # or compare(...) / assert_matches(...)

A case holds a rule-made input (swinref.golden.rule), every intermediate point of the forward pass under the
names of swinref.model.point_names, and a manifest with checksums and per-point tolerances. See docs/golden.md.
"""

from swinref.golden.case import (
    FORMAT,
    FORMAT_VERSION,
    GoldenCase,
    GoldenError,
    export_case,
    read_case,
    sha256_le,
)
from swinref.golden.compare import (
    RESHAPES,
    apply_mapping,
    assert_matches,
    compare,
    compare_case,
    format_report,
    load_candidate,
    load_mapping,
)
from swinref.golden.rule import INPUT_SCALE, golden_input
from swinref.golden.timm import timm_kwargs, timm_state_dict

__all__ = [
    "FORMAT", "FORMAT_VERSION", "GoldenCase", "GoldenError", "export_case", "read_case", "sha256_le", "RESHAPES",
    "apply_mapping", "assert_matches", "compare", "compare_case", "format_report", "load_candidate", "load_mapping",
    "INPUT_SCALE", "golden_input", "timm_kwargs", "timm_state_dict",
]
