"""Add a configuration for one of our architectures to an nnU-Net v2 plans file.

    python -m eval3d.nnunet.plans --plans $nnUNet_preprocessed/Dataset501_X/nnUNetPlans.json \
        --arch genesis [--name 3d_genesis] [--patch_size 64 128 128] [--batch_size 2] [--width 32]

The configuration `inherits_from` the planner's `3d_fullres` (its spacing, resampling and preprocessor)
and overrides:
- `architecture`: our network class (eval3d.nnunet.networks) and its kwargs, including the axis
  permutation computed from the plans' `transpose_forward`;
- `normalization_schemes: NoNormalization`: the network applies the pre-training's HU window itself, so
  nnU-Net's CT z-scoring must not run first;
- `data_identifier`: its own preprocessed folder (the intensities differ from 3d_fullres's);
- `patch_size` (nnU-Net's axis order, a multiple of 8 for UNet3D and 32 for SwinUNETR) and `batch_size`.
"""

import argparse
import json
from pathlib import Path

from eval3d.nnunet.networks import NETWORKS, network_class_path, spatial_permutation
from shared.checkpoint import replace_atomic

PATCH_MULTIPLE = {"genesis": 8, "voco": 32}
DEFAULT_NAME = {"genesis": "3d_genesis", "voco": "3d_voco"}
PARENT = "3d_fullres"


def default_patch_size(parent_patch_size, multiple):
    """The parent's patch size rounded down to `multiple` (at least `multiple`) on every axis."""
    return [max(multiple, int(size) // multiple * multiple) for size in parent_patch_size]


def our_configuration(plans, arch, name=None, patch_size=None, batch_size=None, **arch_kwargs):
    """The configuration dict for `arch` ('genesis' or 'voco') in `plans` (a loaded plans dict)."""
    if arch not in NETWORKS:
        raise ValueError(f"unknown architecture {arch!r}: expected one of {sorted(NETWORKS)}")
    if PARENT not in plans.get("configurations", {}):
        raise ValueError(f"the plans have no {PARENT!r} configuration to inherit from "
                         f"(they have {sorted(plans.get('configurations', {}))})")
    parent = plans["configurations"][PARENT]
    multiple = PATCH_MULTIPLE[arch]
    patch_size = list(patch_size) if patch_size else default_patch_size(parent["patch_size"], multiple)
    if len(patch_size) != 3 or any(int(s) <= 0 or int(s) % multiple for s in patch_size):
        raise ValueError(f"{arch} needs 3 patch sizes that are positive multiples of {multiple}, got {patch_size}")
    kwargs = dict(arch_kwargs, axes_xyz=spatial_permutation(plans["transpose_forward"]))
    name = name or DEFAULT_NAME[arch]
    return {
        "inherits_from": PARENT,
        "data_identifier": f"{plans['plans_name']}_{name}",
        "patch_size": [int(s) for s in patch_size],
        "batch_size": int(batch_size or parent.get("batch_size", 2)),
        "normalization_schemes": ["NoNormalization"],
        "use_mask_for_norm": [False],
        "architecture": {"network_class_name": network_class_path(NETWORKS[arch]), "arch_kwargs": kwargs,
                         "_kw_requires_import": []},
    }


def add_configuration(plans_file, arch, name=None, **kwargs):
    """Write our configuration into `plans_file` (atomically); returns its name."""
    plans_file = Path(plans_file)
    try:
        plans = json.loads(plans_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"cannot read the plans file {plans_file}: {err}") from err
    name = name or DEFAULT_NAME[arch]
    plans["configurations"][name] = our_configuration(plans, arch, name, **kwargs)
    text = json.dumps(plans, indent=4, sort_keys=False).encode()
    replace_atomic(plans_file, lambda f: f.write(text))
    return name


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval3d.nnunet.plans", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", required=True, help="nnUNetPlans.json written by nnUNetv2_plan_and_preprocess")
    p.add_argument("--arch", required=True, choices=sorted(NETWORKS))
    p.add_argument("--name", help="configuration name (default: 3d_genesis / 3d_voco)")
    p.add_argument("--patch_size", type=int, nargs=3, help="default: 3d_fullres's, rounded down to the multiple")
    p.add_argument("--batch_size", type=int, help="default: 3d_fullres's")
    p.add_argument("--width", type=int, help="UNet3D first-conv width (32 as released)")
    p.add_argument("--feature_size", type=int, help="SwinUNETR feature size (48 in VoCo)")
    p.add_argument("--window_size", type=int, help="SwinUNETR attention window (7 in VoCo)")
    p.add_argument("--hu_window", type=float, nargs=2, help="default: the pre-training's window")
    args = p.parse_args(argv)
    arch_kwargs = {k: getattr(args, k) for k in ("width", "feature_size", "window_size", "hu_window")
                   if getattr(args, k) is not None}
    if "width" in arch_kwargs and args.arch != "genesis" or \
            {"feature_size", "window_size"} & set(arch_kwargs) and args.arch != "voco":
        p.error(f"{sorted(arch_kwargs)} do not all apply to --arch {args.arch}")
    name = add_configuration(args.plans, args.arch, args.name, patch_size=args.patch_size,
                             batch_size=args.batch_size, **arch_kwargs)
    print(f"added configuration {name!r} to {args.plans}")


if __name__ == "__main__":
    main()
