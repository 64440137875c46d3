"""Turn one of our checkpoints into the file nnU-Net's `-pretrained_weights` reads.

    python -m eval3d.nnunet.convert --plans $nnUNet_preprocessed/Dataset501_X/nnUNetPlans.json \
        --configuration 3d_genesis --checkpoint runs/semantic_genesis/pretrained.pt --out nnunet_init.pt

nnU-Net's loader reads `torch.load(f)["network_weights"]` and asserts that every key of the network it
built (but `.seg_layers.`) is in that dict with the same shape; it strips no `module.` and reads no
safetensors. So this builds exactly the network the plans configuration describes (nnU-Net's own
builder, deep supervision off as our trainer has it), loads our encoder into it through
`shared.weights.load_pretrained` (any of our or the originals' layouts; the key report is printed), and
writes the whole state dict: the pre-trained tensors plus a fresh initialisation of whatever the
checkpoint does not hold (a decoder, a head with another number of classes).
"""

import argparse
import json
from pathlib import Path

from shared.checkpoint import save_atomic
from shared.weights import WeightLoadError, extract_state_dict, load_pretrained, read_checkpoint


def build_network(plans_file, configuration, dataset_json=None):
    """The network nnU-Net builds for `configuration` of `plans_file` (dataset.json beside it by default)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = Path(plans_file)
    dataset_json = Path(dataset_json) if dataset_json else plans_file.parent / "dataset.json"
    for path in (plans_file, dataset_json):
        if not path.is_file():
            raise FileNotFoundError(f"not found: {path}")
    dataset = json.loads(dataset_json.read_text())
    plans = PlansManager(str(plans_file))
    config = plans.get_configuration(configuration)
    return get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                  config.network_arch_init_kwargs_req_import,
                                  determine_num_input_channels(plans, config, dataset),
                                  plans.get_label_manager(dataset).num_segmentation_heads,
                                  allow_init=True, deep_supervision=False)


def default_branch(state_dict):
    """'teacher' for a VoCo pre-training checkpoint (student and teacher in one dict), else None."""
    return "teacher" if any(k.removeprefix("module.").startswith("teacher.") for k in state_dict) else None


def convert(plans_file, configuration, checkpoint, out, dataset_json=None, branch=None, trusted=False,
            min_matched=0.5, verbose=True):
    """Write {"network_weights": ...} for nnU-Net to `out`; returns the LoadReport."""
    network = build_network(plans_file, configuration, dataset_json)
    try:
        state_dict = extract_state_dict(read_checkpoint(checkpoint, trusted=trusted))  # read once, however big
        report = load_pretrained(network, state_dict, branch=branch or default_branch(state_dict),
                                 min_matched=min_matched, verbose=False)
    except WeightLoadError as err:
        raise WeightLoadError(f"{checkpoint} does not fit configuration {configuration!r} of {plans_file}: {err}") \
            from err
    report.source = str(checkpoint)
    if verbose:
        print(report)
    save_atomic({"network_weights": network.state_dict()}, out)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval3d.nnunet.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", required=True, help="the plans file holding our configuration")
    p.add_argument("--configuration", default="3d_genesis", help="configuration name (default: 3d_genesis)")
    p.add_argument("--checkpoint", required=True, help="our checkpoint or an original's released weights")
    p.add_argument("--out", required=True, help="file for nnUNetv2_train -pretrained_weights")
    p.add_argument("--dataset_json", help="default: dataset.json beside the plans file")
    p.add_argument("--branch", help="keep the keys under this prefix (default: 'teacher' for a VoCo checkpoint)")
    p.add_argument("--min_matched", type=float, default=0.5, help="fail below this fraction of network tensors")
    p.add_argument("--trusted", action="store_true",
                   help="unpickle Python objects (the released Semantic Genesis / TransVW files need it)")
    args = p.parse_args(argv)
    try:
        convert(args.plans, args.configuration, args.checkpoint, args.out, args.dataset_json, args.branch,
                args.trusted, args.min_matched)
    except (FileNotFoundError, WeightLoadError, RuntimeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
