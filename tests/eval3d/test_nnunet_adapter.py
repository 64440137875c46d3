"""The nnU-Net adapter gives our encoders what they were pre-trained on, and the converter writes what
nnU-Net's -pretrained_weights accepts. No nnU-Net run here: its reader, normaliser and loader only."""

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from eval3d.nnunet.convert import convert
from eval3d.nnunet.networks import (
    GenesisUNet3D,
    VoCoSwinUNETR,
    first_layer_input,
    spatial_permutation,
)
from eval3d.nnunet.plans import add_configuration, our_configuration
from shared.unet3d import UNet3D

pytest.importorskip("nnunetv2")

SHAPE_XYZ = (24, 16, 8)  # three different sizes, so that any wrong axis order changes the shape
SWIN_SHAPE_XYZ = (96, 64, 32)  # SwinUNETR takes multiples of 32


def ct_volume_xyz(shape=SHAPE_XYZ, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1200, 1200, shape).astype(np.float32)


def nnunet_input(path, transpose_forward):
    """What nnU-Net's trainer feeds the network for this file under our configuration (no resampling at
    the file's own spacing): SimpleITKIO's (c, z, y, x) array, NoNormalization, then `transpose_forward`."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import NoNormalization

    data, _ = SimpleITKIO().read_images([str(path)])
    data[0] = NoNormalization(use_mask_for_norm=False, intensityproperties={}).run(data[0])
    data = data.transpose([0, *[a + 1 for a in transpose_forward]])
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]


@pytest.mark.parametrize("transpose_forward", [[0, 1, 2], [2, 0, 1]])
def test_genesis_encoder_sees_the_genesis_pipeline_input(tmp_path, transpose_forward):
    from shared.genesis.ct_volumes import read_volume

    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ct_volume_xyz().transpose(2, 1, 0)), str(path))  # (z, y, x) array
    ours = torch.from_numpy(read_volume(path))[None, None]  # SimpleITK, -> (x, y, z), [-1000, 1000] -> [0, 1]
    assert tuple(ours.shape[2:]) == SHAPE_XYZ
    net = GenesisUNet3D(1, 3, False, width=4, axes_xyz=spatial_permutation(transpose_forward))
    seen = first_layer_input(net, nnunet_input(path, transpose_forward))
    torch.testing.assert_close(seen, ours.float(), rtol=0, atol=1e-6)


def test_voco_encoder_sees_the_voco_pipeline_input(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation, ScaleIntensityRange

    path = tmp_path / "ct.nii.gz"
    volume = np.round(ct_volume_xyz(SWIN_SHAPE_XYZ)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))  # stored RAS: VoCo's Orientation leaves it
    voco = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS"),
                    ScaleIntensityRange(a_min=-175.0, a_max=250.0, b_min=0.0, b_max=1.0, clip=True)])
    ours = torch.as_tensor(np.asarray(voco(str(path))), dtype=torch.float32)[None]
    net = VoCoSwinUNETR(1, 3, False, feature_size=12, window_size=2, axes_xyz=spatial_permutation([0, 1, 2]))
    x = nnunet_input(path, [0, 1, 2])
    assert tuple(x.shape[2:]) == SWIN_SHAPE_XYZ[::-1]  # nnU-Net's (z, y, x)
    torch.testing.assert_close(first_layer_input(net, x), ours, rtol=0, atol=1e-6)


def test_genesis_returns_logits_in_nnunet_axes():
    torch.manual_seed(0)
    net = GenesisUNet3D(1, 1, False, width=4, axes_xyz=spatial_permutation([0, 1, 2]))
    plain = UNet3D(n_class=1, width=4)
    plain.load_state_dict(net.state_dict())  # same keys: the subclass adds no weights
    hu = torch.rand(2, 1, *SHAPE_XYZ[::-1]) * 2000 - 1000
    logits = net(hu)
    assert logits.shape == hu.shape
    ours = plain(((hu.clamp(-1000, 1000) + 1000) / 2000).permute(0, 1, 4, 3, 2))  # sigmoid, (x, y, z)
    torch.testing.assert_close(torch.sigmoid(logits), ours.permute(0, 1, 4, 3, 2), rtol=1e-4, atol=1e-5)


def test_deep_supervision_and_extra_channels_are_refused():
    with pytest.raises(ValueError, match="nnUNetTrainerOurs"):
        GenesisUNet3D(1, 2, True, width=4)
    with pytest.raises(ValueError, match="one CT channel"):
        VoCoSwinUNETR(2, 2, False, feature_size=12, window_size=2)


def minimal_plans(tmp_path, transpose_forward=(0, 1, 2)):
    """The parts of a planner's output our configuration and nnU-Net's network builder read."""
    plans = {"dataset_name": "Dataset999_T", "plans_name": "nnUNetPlans", "transpose_forward": list(transpose_forward),
             "transpose_backward": [list(transpose_forward).index(a) for a in range(3)],
             "label_manager": "LabelManager",
             "configurations": {"3d_fullres": {
                 "data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [80, 100, 70],
                 "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False]}}}
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                       "labels": {"background": 0, "liver": 1, "spleen": 2}}))
    return tmp_path / "nnUNetPlans.json"


def test_configuration_inherits_fullres_without_normalisation(tmp_path):
    plans = json.loads(minimal_plans(tmp_path, (2, 0, 1)).read_text())
    genesis = our_configuration(plans, "genesis")
    assert genesis["inherits_from"] == "3d_fullres" and genesis["patch_size"] == [80, 96, 64]
    assert genesis["normalization_schemes"] == ["NoNormalization"]
    assert genesis["data_identifier"] == "nnUNetPlans_3d_genesis"
    assert genesis["architecture"]["network_class_name"] == "eval3d.nnunet.networks.GenesisUNet3D"
    assert genesis["architecture"]["arch_kwargs"]["axes_xyz"] == [0, 2, 1]  # x, y, z sit at axes 0, 2, 1
    assert our_configuration(plans, "voco")["patch_size"] == [64, 96, 64]
    with pytest.raises(ValueError, match="multiples of 32"):
        our_configuration(plans, "voco", patch_size=[64, 64, 48])


def test_converted_voco_weights_load_with_nnunets_loader(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    plans_file = minimal_plans(tmp_path)
    name = add_configuration(plans_file, "voco", patch_size=[32, 32, 32], feature_size=12, window_size=2)
    encoder = VoCoSwinUNETR(1, 14, False, feature_size=12, window_size=2).state_dict()
    encoder = {k: v for k, v in encoder.items() if k.startswith(("swinViT.", "encoder"))}
    student = {f"student.{k}": torch.full_like(v, 1.0) for k, v in encoder.items()}
    teacher = {f"teacher.{k}": torch.full_like(v, 2.0) for k, v in encoder.items()}
    torch.save({"global_step": 5, "state_dict": {**student, **teacher}}, tmp_path / "voco.pt")  # our VoCo layout

    report = convert(plans_file, name, tmp_path / "voco.pt", tmp_path / "init.pt", verbose=False)
    assert (len(report.matched), len(report.matched) + len(report.missing)) == (145, 167)
    network = VoCoSwinUNETR(1, 3, False, feature_size=12, window_size=2)  # 2 labels + background
    load_pretrained_weights(network, str(tmp_path / "init.pt"))  # asserts every key and shape
    state = network.state_dict()
    assert all(torch.equal(state[k], torch.full_like(v, 2.0)) for k, v in encoder.items())  # the teacher
    assert state["out.conv.conv.weight"].shape[0] == 3


def test_a_checkpoint_of_the_other_architecture_is_refused_by_name(tmp_path):
    from shared.weights import WeightLoadError

    plans_file = minimal_plans(tmp_path)
    name = add_configuration(plans_file, "genesis", patch_size=[16, 16, 16], width=4)
    swin = VoCoSwinUNETR(1, 14, False, feature_size=12, window_size=2).state_dict()
    torch.save({"state_dict": swin}, tmp_path / "swin.pt")
    with pytest.raises(WeightLoadError, match="swin.pt does not fit configuration '3d_genesis'"):
        convert(plans_file, name, tmp_path / "swin.pt", tmp_path / "init.pt", verbose=False)
    assert not (tmp_path / "init.pt").exists()
