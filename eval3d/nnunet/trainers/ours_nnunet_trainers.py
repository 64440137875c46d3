"""What nnU-Net's trainer search imports from `nnUNet_extTrainer=eval3d/nnunet/trainers`.

It imports every module of this folder as a top-level module, so the trainers are re-exported from
eval3d.nnunet.trainer (one class object whichever way they are found). Needs the repository root on PYTHONPATH.
"""

from eval3d.nnunet.trainer import nnUNetTrainerOurs, nnUNetTrainerOurs_2epochs, nnUNetTrainerOurs_tiny

__all__ = ["nnUNetTrainerOurs", "nnUNetTrainerOurs_tiny", "nnUNetTrainerOurs_2epochs"]
