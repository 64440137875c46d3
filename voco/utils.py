"""Small helpers shared by VoCo's entry scripts."""

import argparse


def str2bool(value):
    """argparse type for the original's untyped boolean flags: "False", "0", "no", "" -> False."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off", "", "none"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def amp_settings(device, noamp=False, amp_dtype="float16"):
    """(enabled, dtype): autocast only on CUDA; fp16 (the original's, with a GradScaler) or bf16."""
    import torch
    enabled = device.type == "cuda" and not noamp
    return enabled, {"float16": torch.float16, "bfloat16": torch.bfloat16}[amp_dtype]


def check_roi(parser, name, value, double_input=False):
    """SwinUNETR halves a crop five times and normalises the last map: every side a multiple of 32 and one side
    >= 64. With --double_input the network sees (2 x roi, roi, roi), so a roi of 32 is enough there."""
    if value % 32 or (2 * value if double_input else value) < 64:
        least = "32 with --double_input (its doubled side is then 64)" if double_input else "64 voxels per side"
        parser.error(f"{name} {value}: SwinUNETR needs crops of at least {least} and a multiple of 32 "
                     "(it downsamples 5 times, and the last feature map must hold more than one voxel)")


def check_patch(parser, roi):
    """A fine-tuning patch (--roi_x/y/z): multiples of 32, and the 1/32 map must hold more than one voxel."""
    if any(r < 32 or r % 32 for r in roi) or max(roi) < 64:
        parser.error(f"--roi_x/--roi_y/--roi_z {' '.join(map(str, roi))}: SwinUNETR needs each side a multiple of 32 "
                     "and at least one side >= 64 (it downsamples 5 times, and the last feature map must hold "
                     "more than one voxel)")
