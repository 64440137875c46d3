"""Data-centre GPUs: memory and dense peak throughput per precision, from the vendors' spec sheets.

Peaks are dense tensor-core figures (the sparse ones are twice these). Memory is what PyTorch can use
(`torch.cuda.get_device_properties(0).total_memory`), a little under the marketed capacity. `find_gpu`
matches the most specific name first ("H100 NVL" before "H100").
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float       # usable by PyTorch
    bf16_tflops: float      # dense; fp16 the same on every card listed
    tf32_tflops: float      # dense; cuDNN convolutions in fp32 use TF32 by default
    fp32_tflops: float      # without tensor cores (fp32 matmuls at torch's default "highest" precision)


GPUS = (
    GPU("H100 NVL", 93.1, 835.5, 417.5, 60.0),      # 94 GB; the sheet's 1671 bf16 TFLOP/s are sparse
    GPU("H100 PCIe", 79.2, 756.5, 378.0, 51.2),     # 80 GB
    GPU("H100", 79.2, 989.4, 494.7, 66.9),          # SXM5 80 GB
    GPU("GH200", 94.5, 989.4, 494.7, 66.9),         # 96 GB HBM3 variant
    GPU("H200", 139.8, 989.4, 494.7, 66.9),         # SXM 141 GB: H100's compute, more and faster memory
    GPU("B200", 178.4, 2250.0, 1100.0, 75.0),       # 180 GB (HGX B200)
    GPU("A100 40GB", 39.4, 312.0, 156.0, 19.5),
    GPU("A100", 79.2, 312.0, 156.0, 19.5),          # 80 GB
    GPU("L40S", 44.4, 362.0, 183.0, 91.6),          # 48 GB GDDR6
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
    for gpu in GPUS:  # the table lists the more specific names first
        if gpu.name.lower() in wanted:
            return gpu
    return None


def gpu_names():
    return [g.name for g in GPUS]
