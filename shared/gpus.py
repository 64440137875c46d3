"""Data-centre GPUs: memory and dense peak throughput per precision, from the vendors' spec sheets.

Peaks are dense tensor-core figures (the sparse ones are twice these). Memory is what PyTorch can use
(`torch.cuda.get_device_properties(0).total_memory`), a little under the marketed capacity. `find_gpu`
matches the most specific name first ("H100 NVL" before "H100").
"""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float       # usable by PyTorch
    bf16_tflops: float      # dense; fp16 the same on every card listed
    tf32_tflops: float      # dense; cuDNN convolutions in fp32 use TF32 by default
    fp32_tflops: float      # without tensor cores (fp32 matmuls at torch's default "highest" precision)


GPUS = (
    GPU("H200 NVL", 139.8, 835.5, 417.5, 60.0),     # 141 GB, the NVL (PCIe) form factor: H100 NVL's compute
    GPU("H100 NVL", 93.1, 835.5, 417.5, 60.0),      # 94 GB; the sheet's 1671 bf16 TFLOP/s are sparse
    GPU("H100 PCIe", 79.2, 756.5, 378.0, 51.2),     # 80 GB
    GPU("H100", 79.2, 989.5, 494.5, 67.0),          # SXM5 80 GB
    GPU("GH200", 94.5, 989.5, 494.5, 67.0),         # 96 GB HBM3 variant
    GPU("H200", 139.8, 989.5, 494.5, 67.0),         # SXM 141 GB: H100's compute, more and faster memory
    GPU("B200", 178.4, 2250.0, 1100.0, 75.0),       # 180 GB (HGX B200)
    GPU("A100 40GB", 39.4, 312.0, 156.0, 19.5),
    GPU("A100", 79.2, 312.0, 156.0, 19.5),          # 80 GB
    GPU("L40S", 44.4, 362.05, 183.0, 91.6),          # 48 GB GDDR6
    GPU("L4", 22.0, 121.0, 60.0, 30.3),             # 24 GB
    GPU("A10G", 22.0, 70.0, 35.0, 31.2),            # 24 GB (AWS)
    GPU("V100", 31.7, 125.0, 125.0, 15.7),          # 32 GB; no bf16 or TF32: fp16 tensor-core figure
)

ALIASES = {"H100 SXM": "H100", "H100 80GB": "H100", "H200 SXM": "H200", "A100 80GB": "A100",
           "A100-40": "A100 40GB", "A100-80": "A100"}


def find_gpu(name):
    """The table entry for a device name ("NVIDIA H100 80GB HBM3", "h200", "A100 40GB" ...), or None."""
    wanted = " ".join(str(name).replace("-", " ").split()).lower()
    for alias, target in ALIASES.items():
        if alias.replace("-", " ").lower() == wanted:
            wanted = target.lower()
    if "a100" in wanted and "40" in wanted:
        return next(g for g in GPUS if g.name == "A100 40GB")
    for gpu in GPUS:  # the table lists the more specific names first; whole words: "L40" is not an L4
        if re.search(rf"(?<![a-z0-9]){re.escape(gpu.name.lower())}(?![a-z0-9])", wanted):
            return gpu
    return None


def peak_tflops(name, precision):
    """The dense peak (TFLOP/s) of `precision` (bf16, fp16, tf32, fp32) for a device name; None if unknown."""
    gpu = find_gpu(name)
    if gpu is None:
        return None
    return {"bf16": gpu.bf16_tflops, "fp16": gpu.bf16_tflops, "tf32": gpu.tf32_tflops,
            "fp32": gpu.fp32_tflops}[precision]


def gpu_names():
    return [g.name for g in GPUS]
