"""nnU-Net v2 fine-tunes our UNet3D from our checkpoint: plan -> our configuration -> convert weights ->
preprocess -> train one tiny epoch -> predict, on a tiny NIfTI set, all on CPU.

Every nnU-Net step is the v2 API its CLI calls (nnUNetv2_plan_and_preprocess, nnUNetv2_train, nnUNetv2_predict),
in process and with one worker, so that the default-suite test stays within seconds.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from eval3d.nnunet.convert import convert
from eval3d.nnunet.plans import add_configuration
from shared.unet3d import UNet3D

pytest.importorskip("nnunetv2")

TRAINERS = Path(__file__).resolve().parents[2] / "eval3d" / "nnunet" / "trainers"


def nnunet_env(monkeypatch, root):
    """nnU-Net's folders under `root`, one process everywhere, no torch.compile."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(Path(root) / name))
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")  # the planner sets torch's threads to it: 0 is refused there
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    monkeypatch.setenv("nnUNet_compile", "f")
    return Path(root)


def worker_pools_as_threads(monkeypatch):
    """nnU-Net's fingerprint, integrity check and preprocessing each start a spawn pool even for one worker;
    a spawned worker re-imports torch and nnU-Net (seconds each). Threads in this process run the same
    per-case code (the pools' `_pool` workers still answer is_alive)."""
    from multiprocessing.pool import ThreadPool
    from types import SimpleNamespace

    from nnunetv2.experiment_planning import verify_dataset_integrity
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor

    threads = SimpleNamespace(get_context=lambda method: SimpleNamespace(Pool=ThreadPool))
    for module in (verify_dataset_integrity, fingerprint_extractor, default_preprocessor):
        monkeypatch.setattr(module, "multiprocessing", threads)


def ct_case(shape_zyx, seed, spacing=(1.0, 1.0, 1.0)):
    """A (z, y, x) CT in HU (air around a soft-tissue block holding a brighter 'organ') and its label."""
    rng = np.random.default_rng(seed)
    image = np.full(shape_zyx, -800.0, np.float32) + rng.normal(0, 20, shape_zyx).astype(np.float32)
    image[2:-2, 2:-2, 2:-2] = 40.0
    centre = [s // 2 + int(rng.integers(-1, 2)) for s in shape_zyx]
    grid = np.indices(shape_zyx)
    organ = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= (min(shape_zyx) // 4) ** 2
    image[organ] = 150.0
    return image, organ.astype(np.uint8)


def write_nifti(array_zyx, path, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def write_raw_dataset(raw_root, dataset_id=501, name="Tiny", cases=2, shape_zyx=(16, 16, 16)):
    """nnU-Net's raw layout: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json."""
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        image, label = ct_case(shape_zyx, seed=i)
        write_nifti(image, folder / "imagesTr" / f"case{i:03d}_0000.nii.gz")
        write_nifti(label, folder / "labelsTr" / f"case{i:03d}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1},
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return folder


def plan(dataset_id):
    """Fingerprint and plan (nnUNetv2_plan_and_preprocess without the preprocessing); the plans file.

    The fingerprint samples 1e4 instead of 1e8 foreground intensities (seconds saved on tiny volumes; the
    statistics feed CT normalisation, which our configuration does not use)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, plan_experiments
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    class FewIntensitySamples(DatasetFingerprintExtractor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e4

    extract_fingerprint_dataset(dataset_id, FewIntensitySamples, num_processes=1, check_dataset_integrity=True,
                                show_progress_bar=False)
    plan_experiments([dataset_id])
    return Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(dataset_id) / "nnUNetPlans.json"


def preprocess(dataset_id, configuration):
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess as nnunet_preprocess

    nnunet_preprocess([dataset_id], configurations=[configuration], num_processes=[1], show_progress_bar=False)


def trainer_with_pretrained(dataset_id, configuration, trainer_name, weights_file, fold="all"):
    """What nnUNetv2_train -pretrained_weights does before training: the trainer, its network loaded."""
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    trainer = get_trainer_from_args(str(dataset_id), configuration, fold, trainer_name, "nnUNetPlans",
                                    device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, str(weights_file))
    return trainer


def predict(model_folder, images_folder, out_folder, fold="all"):
    """nnUNetv2_predict without worker processes; returns {case: (z, y, x) label array}."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    Path(out_folder).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(str(images_folder), str(out_folder), save_probabilities=False,
                                            overwrite=True)
    return {p.name[:-len(".nii.gz")]: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(Path(out_folder).glob("*.nii.gz"))}


WIDTH = 4
ENCODER = ("down_tr64.", "down_tr128.", "down_tr256.", "down_tr512.")


def our_genesis_checkpoint(path, seed=1):
    """A checkpoint in our Genesis pre-training layout (shared/genesis/pretrain.py checkpoint_dict)."""
    torch.manual_seed(seed)
    model = UNet3D(n_class=1, width=WIDTH)
    with torch.no_grad():  # BatchNorm affine and buffers away from their init values too
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.1)
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "optimizer_state_dict": {},
                "num_epoch_no_improvement": 0, "best_loss": 0.1, "best_acc": 0.0}, path)
    return model.state_dict()


def encoder_state(network):
    return {k: v.detach().clone() for k, v in network.state_dict().items() if k.startswith(ENCODER)}


@pytest.fixture
def keep_torch_threads():
    """nnU-Net's predictor sets torch's thread count; the next test in this worker gets it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("keep_torch_threads")
def test_nnunet_fine_tunes_unet3d_from_our_checkpoint(tmp_path, monkeypatch):
    root = nnunet_env(monkeypatch, tmp_path)
    worker_pools_as_threads(monkeypatch)
    raw = write_raw_dataset(root / "nnUNet_raw", dataset_id=501, cases=2, shape_zyx=(16, 16, 16))
    plans_file = plan(501)
    configuration = add_configuration(plans_file, "genesis", patch_size=[16, 16, 16], batch_size=2, width=WIDTH)
    ours = our_genesis_checkpoint(tmp_path / "ours.pt")
    report = convert(plans_file, configuration, tmp_path / "ours.pt", tmp_path / "nnunet_init.pt", verbose=False)
    assert report.missing == ["out_tr.final_conv.weight", "out_tr.final_conv.bias"]  # 2 classes vs 1
    preprocess(501, configuration)

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # data augmentation in this process
    trainer = trainer_with_pretrained(501, configuration, "nnUNetTrainerOurs_tiny", tmp_path / "nnunet_init.pt")
    started = encoder_state(trainer.network)
    fresh = encoder_state(type(trainer.network)(1, 2, False, **trainer.configuration_manager.network_arch_init_kwargs))
    conv = "down_tr64.ops.0.conv1.weight"
    assert all(torch.equal(started[k], ours[k]) for k in started), "the encoder did not start from our weights"
    assert not torch.allclose(started[conv], fresh[conv]), "a fresh initialisation equals the checkpoint"

    trainer.run_training()
    trained = encoder_state(trainer.network)
    assert not torch.equal(trained[conv], started[conv]), "training did not update the encoder"

    masks = predict(trainer.output_folder_base, raw / "imagesTr", tmp_path / "predicted")
    assert sorted(masks) == ["case000", "case001"]
    assert all(m.shape == (16, 16, 16) and set(m.ravel().tolist()) <= {0, 1} for m in masks.values())
