"""VoCo crops on the training device (`--crops_on device`): the loader workers only read the cached
working volume and draw the crop parameters; the crops, their resize to roi^3, the flips / rot90 /
intensity shift and the overlap labels are computed on the device, batched over the volumes of a step.

Same numbers as the worker path (`VoCoCrops.__call__` in a worker) for the same seed: the parameters of
volume j in pass e are drawn by the same `VoCoCrops.draw` from the same generator `(seed, e, j)` (the
random-crop centres, then each crop's flips / rot90 / shift: `voco.data.CropAugmentation`, which draws
MONAI RandFlip / RandRotate90 / RandShiftIntensity's distributions from our own torch.Generator), and
applied with the same operations:

- crops: slices of the volume (the base grid is one reshape of the whole batch);
- resize: MONAI's `Resize` (trilinear, align_corners=True), one call for every crop of the step;
- flips, rot90, shift: `voco.data.augment_batch` (`torch.flip`, `torch.rot90`, `+ offset` on the crops
  that drew them), the worker path's own function;
- labels: `overlap_labels` in torch (float64, as the NumPy version).

The batch that comes out is the one the default collate of the worker path gives (image B x S x 1 x
roi^3, crops B x K x 1 x roi^3, labels B x S x K float64), so the training step is unchanged.
"""

import numpy as np
import torch
from monai.transforms import ToDeviced

from voco.data import _plain, augment_batch  # noqa: F401  (augment_batch: re-exported for callers)

CROPS_ON = ("auto", "device", "workers")
PARAMETER_KEYS = ("volume", "corners", "flips", "rot_k", "shift")


def resolve_crops_on(crops_on, device):
    """'auto' -> 'device' on CUDA, 'workers' (the per-crop MONAI path in the loader) elsewhere."""
    if crops_on not in CROPS_ON:
        raise ValueError(f"--crops_on must be one of {CROPS_ON}, got {crops_on!r}")
    if crops_on == "auto":
        return "device" if torch.device(device).type == "cuda" else "workers"
    return crops_on


def draw_parameters(crops, rng):
    """The random choices `crops(volume, rng)` makes, without touching the volume (`VoCoCrops.draw`):
    corners S x 2 (int64), and with augmentation, per crop (random crops first, then the base crops, as
    the worker path augments them) flips M x 3 (bool), rot_k M (int64, 0 = not rotated), shift M (float64)."""
    return crops.draw(rng)


class VolumesWithParameters(torch.utils.data.Dataset):
    """A VoCoDataset whose items are the working volume and its crop parameters (`draw_parameters`,
    from the generator `(seed, pass, index)` the worker path uses), not the crops."""

    def __init__(self, dataset):
        self.dataset, self.crops = dataset, dataset.crops

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def load_readable(self, i):
        return self.dataset.load_readable(i)

    def __getitem__(self, i):
        j, image = self.dataset.load_readable(i)
        image = _plain(image).float()
        if tuple(image.shape[1:]) != self.crops.volume_size:  # e.g. a stale cache of another size
            raise ValueError(f"{self.dataset.items[j]['image']}: working volume is {tuple(image.shape[1:])}, "
                             f"expected {self.crops.volume_size}")
        rng = np.random.default_rng([self.dataset.seed, self.dataset.epoch, j])
        return {"volume": image, **draw_parameters(self.crops, rng)}

    def device_crops(self, batch, device):
        return device_crops(batch, self.crops, device)


def overlap_labels_torch(corners, base_roi=96, num_crops=4):
    """`data.overlap_labels` for an integer tensor of corners (... x 2), on its device, float64."""
    edges = torch.arange(num_crops, device=corners.device, dtype=torch.int64) * base_roi
    x0, y0 = corners[..., :1].long(), corners[..., 1:].long()
    dx = (torch.minimum(edges + base_roi, x0 + base_roi) - torch.maximum(edges, x0)).clamp(min=0)
    dy = (torch.minimum(edges + base_roi, y0 + base_roi) - torch.maximum(edges, y0)).clamp(min=0)
    area = dx.unsqueeze(-1) * dy.unsqueeze(-2)  # ... x i x j
    return (area.double() / float(base_roi * base_roi)).flatten(-2)


def device_crops(batch, crops, device):
    """A collated batch of VolumesWithParameters items -> the worker path's collated batch, on `device`."""
    batch = ToDeviced(keys=["volume"], device=device, non_blocking=True)(dict(batch))
    vol = batch["volume"]
    b, n, r, s = vol.shape[0], crops.num_crops, crops.base_roi, crops.sw_batch_size
    if tuple(vol.shape[1:]) != (1, *crops.volume_size):
        raise ValueError(f"working volumes are {tuple(vol.shape[1:])}, expected (1, {crops.volume_size})")
    depth = vol.shape[-1]
    bases = (vol[:, 0].reshape(b, n, r, n, r, depth).permute(0, 1, 3, 2, 4, 5)
             .reshape(b, n * n, r, r, depth))                       # base crop k = n*i + j
    corners = batch["corners"].reshape(b, s, 2)
    rands = torch.stack([vol[v, 0, x:x + r, y:y + r, :] for v in range(b) for x, y in corners[v].tolist()])
    every = torch.cat((rands.reshape(b, s, r, r, depth), bases), dim=1).reshape(b * (s + n * n), r, r, depth)
    small = _plain(crops.resize(every)).unsqueeze(1)                 # crops as channels: one resize call
    if crops.aug:
        crops.augment.apply(small, {"flips": batch["flips"].reshape(b * (s + n * n), -1),
                                    "rot_k": batch["rot_k"].reshape(-1), "shift": batch["shift"].reshape(-1)})
    small = small.reshape(b, s + n * n, 1, *small.shape[2:])
    labels = overlap_labels_torch(corners.to(device, non_blocking=True), r, n)
    return {"image": small[:, :s].contiguous(), "crops": small[:, s:].contiguous(), "labels": labels,
            "corners": corners}
