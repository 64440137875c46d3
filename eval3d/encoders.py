"""The encoders eval3d evaluates: a name, an architecture and a checkpoint (or none: random init).

    --encoder sg=runs/demo/semantic_genesis/pretrain/en_de/semantic_genesis_chest_ct.pt        # UNet3D, inferred
    --encoder voco=VoCo_10k.pt:swinunetr      --encoder mine=release/voco                      # a release folder

Two architectures, built from the library classes the release folders name (shared/release.py):
- `unet3d`: shared.unet3d.UNet3D (Models Genesis, Semantic Genesis, TransVW); width read from the checkpoint;
- `swinunetr`: MONAI SwinUNETR v2 (VoCo); feature size and window read from the checkpoint.

Weights go through shared.weights.load_pretrained (prefix stripping, shape checks, a key report). The layouts:
our Genesis-family pre-training checkpoints (`state_dict` of YNet3D), the originals' released
`Genesis_Chest_CT.pt` / `semantic_genesis_chest_ct.pt` / `TransVW_chest_ct.pt` (`state_dict`, `module.`
prefixes; pass --trusted for their numpy scalars), fine-tuned TargetNets (`base_model.`), our VoCo v1
checkpoints (`state_dict` with `student.*` / `teacher.*` branches: the teacher is read, as voco/export.py
does), the released VoCo_10k.pt (bare SwinUNETR keys), VoCo v2 `SSL_head` files (`backbone.*` plus heads),
and release folders (model.safetensors, checked against config.json). Every encoder tensor must match.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.weights import DEFAULT_PREFIXES, WeightLoadError, extract_state_dict, load_pretrained, read_checkpoint

ARCHS = ("unet3d", "swinunetr")
UNET3D_ENCODER = ("down_tr64.", "down_tr128.", "down_tr256.", "down_tr512.")
SWIN_ENCODER = ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")
PREFIXES = DEFAULT_PREFIXES + ("base_model.",)  # a fine-tuned Genesis TargetNet
# the intensity window each pre-training used, HU -> [0, 1] (Genesis: [-1000, 1000]; VoCo: [-175, 250])
HU_WINDOW = {"unet3d": (-1000.0, 1000.0), "swinunetr": (-175.0, 250.0)}
# the random-init configuration when no checkpoint of the architecture says otherwise (the originals')
DEFAULT_CONFIG = {"unet3d": {"width": 32}, "swinunetr": {"feature_size": 48, "window_size": 7}}


@dataclass
class Encoder:
    name: str
    arch: str
    path: str | None = None          # None: random init
    config: dict = field(default_factory=dict)

    @property
    def pretrained(self):
        return self.path is not None

    def random_name(self):
        """The name of the random-init arm of the same architecture and configuration."""
        return "random_" + self.arch + "".join(f"_{k[0]}{v}" for k, v in sorted(self.config.items()))


def encoder_prefixes(arch):
    return UNET3D_ENCODER if arch == "unet3d" else SWIN_ENCODER


def parse_encoder(text):
    """'name=path[:arch]' -> Encoder (arch and configuration read from the checkpoint when not given)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--encoder {text!r}: expected name=path[:arch] (arch one of {ARCHS})")
    path, arch = rest, None
    head, _, tail = rest.rpartition(":")
    if head and tail in ARCHS:
        path, arch = head, tail
    state = checkpoint_tensors(path)
    found = infer_arch(state, path)
    if arch is not None and arch != found:
        raise ValueError(f"--encoder {text!r}: {path} holds a {found} checkpoint, not {arch}")
    return Encoder(name, found, path, infer_config(found, state))


_TRUSTED = {"value": False}


def trust_checkpoints(trusted):
    """--trusted: unpickle any object in the checkpoints (the released Genesis-family .pt files need it)."""
    _TRUSTED["value"] = bool(trusted)


def checkpoint_tensors(path):
    """The tensors of a checkpoint file or a release folder, `module.` stripped, v1 VoCo's teacher branch only."""
    path = Path(path)
    if path.is_dir():
        from shared.release import read_tensors
        state = read_tensors(path)
    else:
        state = extract_state_dict(read_checkpoint(path, trusted=_TRUSTED["value"]))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    has_backbone = any(k.startswith("backbone.") for k in state)
    if not has_backbone and any(k.startswith("teacher.") and "swinViT" in k.replace("swin_vit", "swinViT")
                                for k in state):  # VoCo v1: two encoders, the teacher is the released one
        state = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
    return state


def infer_arch(state, where):
    keys = " ".join(state)
    if "swinViT." in keys or "swin_vit." in keys:
        return "swinunetr"
    if "down_tr64." in keys:
        return "unet3d"
    raise WeightLoadError(f"{where}: neither a UNet3D (down_tr64.*) nor a SwinUNETR (swinViT.*) checkpoint "
                          f"(first keys {list(state)[:4]})")


def _find(state, suffix):
    return next((v for k, v in state.items() if k.replace("swin_vit", "swinViT").endswith(suffix)), None)


def infer_config(arch, state):
    """The constructor settings a checkpoint was trained with: UNet3D width; Swin feature size and window."""
    if arch == "unet3d":
        return {"width": int(_find(state, "down_tr64.ops.0.conv1.weight").shape[0])}
    patch = _find(state, "swinViT.patch_embed.proj.weight")
    table = _find(state, "swinViT.layers1.0.blocks.0.attn.relative_position_bias_table")  # (2w - 1)^3 rows
    window = (round(table.shape[0] ** (1 / 3)) + 1) // 2 if table is not None else 7
    return {"feature_size": int(patch.shape[0]), "window_size": window}


def random_arm(arch, config=None):
    config = dict(config or DEFAULT_CONFIG[arch])
    enc = Encoder("", arch, None, config)
    enc.name = enc.random_name()
    return enc


def build_network(arch, config, n_class):
    """The whole library network (encoder and decoder) with `n_class` outputs: UNet3D or SwinUNETR v2."""
    if arch == "unet3d":
        from shared.unet3d import UNet3D
        return UNet3D(n_class=n_class, width=config["width"])
    from monai.networks.nets import SwinUNETR
    return SwinUNETR(in_channels=1, out_channels=n_class, feature_size=config["feature_size"], use_v2=True,
                     window_size=config["window_size"])


def load_encoder(network, encoder, verbose=False):
    """Copy `encoder`'s weights into `network`; returns the LoadReport. Every encoder tensor must match
    (decoder tensors load too where the checkpoint has them, e.g. a Genesis en_de U-Net)."""
    state = checkpoint_tensors(encoder.path)
    report = load_pretrained(network, state, prefixes=PREFIXES, min_matched=0.0, verbose=verbose)
    report.source = str(encoder.path)
    wanted = [k for k in network.state_dict() if k.startswith(encoder_prefixes(encoder.arch))]
    missing = [k for k in wanted if k not in report.matched]
    if missing:
        raise WeightLoadError(f"{encoder.path}: only {len(wanted) - len(missing)}/{len(wanted)} encoder tensors "
                              f"matched (another width or window?); missing e.g. {missing[:4]}\n{report}")
    return report


def key_report(network, encoder):
    """{"matched", "total", "encoder_matched", "encoder_total"}: what a checkpoint gave the network."""
    report = load_encoder(network, encoder)
    wanted = [k for k in network.state_dict() if k.startswith(encoder_prefixes(encoder.arch))]
    return {"matched": len(report.matched), "total": len(report.matched) + len(report.missing),
            "encoder_matched": sum(k in set(report.matched) for k in wanted), "encoder_total": len(wanted),
            "unexpected": len(report.unexpected), "dropped": len(report.dropped)}


def seed_network(arch, config, n_class, seed):
    """The network of a seed: the same random decoder (and encoder) for every arm of that seed."""
    torch.manual_seed(seed)
    return build_network(arch, config, n_class)
