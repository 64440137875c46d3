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
