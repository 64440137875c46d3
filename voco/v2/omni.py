"""VoCo omni-supervised pre-training (`--recipe omni`, Large-Scale-Medical's `Omni-supervised/`).

Per step, on top of v2's self-supervised loss on the unlabelled crops (intra + inter + reg):

- seg: DiceCE (`monai.losses.DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)`) of
  the whole SwinUNETR on labelled patches (`voco.v2.omni_data`);
- semi (self-training, from the switch on): the step at which `num_steps // 2` steps are done freezes a copy
  of the SwinUNETR (the teacher); every later step, its argmax on the unlabelled random crops is the
  pseudo-label of a DiceCE on the student's segmentation of the same crops. The student's decoder reads
  detached encoder maps there ("frozen", as the original), except Swin's stage-4 output that the first
  decoder block takes, which the original leaves attached (kept: semi also trains Swin stages 1-4).

The frozen teacher is written to `<logdir>/voco_pretrain.omni_teacher.pt` at the switch (a SwinUNETR state
dict), so a run resumed past the switch uses the same teacher.
"""

import copy
from pathlib import Path

import torch
from monai.losses import DiceCELoss

from shared.checkpoint import save_atomic
from shared.weights import WeightLoadError, read_checkpoint
from voco.data import flatten_batch
from voco.v2.engine import optimize
from voco.v2.loss import v2_losses
from voco.v2.model import VoCoV2

LOSS_COLUMNS = ("loss", "intra", "inter", "reg", "seg", "semi")
TEACHER_FILE = "omni_teacher.pt"  # run_file(logdir, RUN_NAME, TEACHER_FILE)


def dice_ce(logits, labels):
    """The original's segmentation loss, built per call as it does (it holds no state)."""
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(logits, labels)


class VoCoOmni(VoCoV2):
    """VoCoV2 whose backbone is a whole SwinUNETR (decoders and `out` kept: `backbone.decoder*`,
    `backbone.out.*`, the original's keys), with the segmentation terms. `out_channels`: 21 for VoComni."""

    def __init__(self, *args, out_channels=21, **kwargs):
        super().__init__(*args, out_channels=out_channels, **kwargs)

    def forward(self, img, crops, labels, seg_img, seg_label, step=None, self_train=False):
        """img: (B*S) random crops, crops: (B*K) base crops, labels: BxSxK, seg_img/seg_label: P labelled
        patches. Returns (intra, inter, reg, seg, semi_logits): semi_logits, the segmentation of the random
        crops through the decoder on detached maps, only when `self_train` (None otherwise)."""
        maps, hs3 = self.backbone.encode(torch.cat([img, crops], dim=0))
        seg = dice_ce(self.backbone.segment(seg_img), seg_label)
        student, teacher = self.heads(self.backbone.pool(maps), step)
        n = img.shape[0]
        intra, inter, reg, _ = v2_losses(student[:n], student[n:], teacher[:n], teacher[n:], labels)
        semi_logits = None
        if self_train:  # the original decodes every crop and keeps the random ones: same numbers
            semi_logits = self.backbone.decode([m[:n].detach() for m in maps], hs3[:n])
        return intra, inter, reg, seg, semi_logits


class SelfTraining:
    """The switch to self-training after `switch` completed steps (the original: num_steps // 2).

    As the original's loop (0-based index s): the teacher is frozen at s == switch (the weights after
    `switch` updates) and pseudo-labels from s > switch, i.e. 1-based steps switch + 2 on."""

    def __init__(self, switch, teacher_file, write=True, resume_dir=None):
        self.switch, self.teacher_file, self.write = switch, Path(teacher_file), write
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.teacher = None

    def active(self, step):
        return step - 1 > self.switch

    def teacher_at(self, model, step):
        """The frozen SwinUNETR for 1-based `step` (built at the switch, read back on a resume), or None."""
        if step - 1 < self.switch:
            return None
        if self.teacher is None:
            if step - 1 == self.switch:
                self.teacher = self._freeze(copy.deepcopy(model.backbone))
                if self.write:
                    save_atomic(self.teacher.state_dict(), self.teacher_file)
            else:
                self.teacher = self._load(model)
        return self.teacher

    @staticmethod
    def _freeze(net):
        return net.eval().requires_grad_(False)

    def _load(self, model):
        candidates = [self.teacher_file] + ([self.resume_dir / self.teacher_file.name] if self.resume_dir else [])
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise WeightLoadError(f"resuming past the self-training switch (step {self.switch}) needs the frozen "
                                  f"teacher written there: none of {', '.join(map(str, candidates))} exists")
        teacher = copy.deepcopy(model.backbone)
        teacher.load_state_dict(read_checkpoint(found), strict=True)
        return self._freeze(teacher)


class OmniStep:
    """The omni training step, called by voco.engine.train as its `step_fn`; the batch carries the
    labelled patches under "labelled" (engine.train's `labelled_batches`)."""

    def __init__(self, self_training):
        self.self_training = self_training

    def __call__(self, model, net, batch, optimizer, scheduler, scaler, device, amp, amp_dtype,
                 grad_clip=False, max_grad_norm=1.0, step=None, watch=None):
        img, crops, labels = (t.to(device, non_blocking=True) for t in flatten_batch(batch))
        seg_img, seg_label = (batch["labelled"][k].to(device, non_blocking=True) for k in ("image", "label"))
        teacher = self.self_training.teacher_at(model, step)
        self_train = self.self_training.active(step)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            intra, inter, reg, seg, semi_logits = net(img, crops, labels, seg_img, seg_label, step=step,
                                                      self_train=self_train)
            semi = torch.zeros((), device=device)
            if self_train:
                with torch.no_grad():
                    pseudo = teacher.segment(img).argmax(1, keepdim=True)  # the frozen model's labels of the crops
                semi = dice_ce(semi_logits, pseudo)
            loss = intra + inter + reg + seg + semi
        loss = optimize(loss, model, optimizer, scheduler, scaler, grad_clip, max_grad_norm, step, watch)
        parts = {"loss": loss, "intra": intra, "inter": inter, "reg": reg, "seg": seg, "semi": semi}
        return {k: v.detach() for k, v in parts.items()}
