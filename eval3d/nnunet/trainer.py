"""nnU-Net trainers for our networks: deep supervision off, everything else nnU-Net's.

Neither UNet3D nor SwinUNETR has the multi-resolution outputs (or the `.decoder` attribute) that
nnU-Net's default trainer switches deep supervision on through, so the trainer builds the network with
`deep_supervision=False`, trains on the full-resolution output only, and makes
`set_deep_supervision_enabled` a no-op.

nnU-Net finds a trainer by class name (`-tr`) in its own package or in the folders named by the
`nnUNet_extTrainer` environment variable: point that at eval3d/nnunet/trainers (with the repository root
on PYTHONPATH so the plans' network classes import).

The `_tiny` variants run one epoch of two training and one validation iteration: for tests and smoke runs.
"""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerOurs(nnUNetTrainer):  # noqa: N801  (nnU-Net's trainer naming)
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    def set_deep_supervision_enabled(self, enabled: bool):
        """Nothing to switch: our networks have a single output."""


class nnUNetTrainerOurs_tiny(nnUNetTrainerOurs):  # noqa: N801
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1


class nnUNetTrainerOurs_2epochs(nnUNetTrainerOurs):  # noqa: N801
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 5
        self.num_val_iterations_per_epoch = 2
