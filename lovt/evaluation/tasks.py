"""The 18 localized downstream tasks (the original's configs/evaluation_model/*.yaml and
EXTENDED_EVAL_EXPERIMENTS). All: Adam (weight decay 1e-6), ReduceLROnPlateau(patience 3, factor 0.5) on the
validation loss, early stopping on the monitored validation metric (max, min_delta 1e-5), warm-up lr 1e-3
for fine-tuning, 5 final runs.
"""

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Task:
    number: int  # the column in the paper's tables
    name: str  # key, e.g. rsna_finetune_1
    eval_name: str  # metric prefix of the original (<eval_name>_test/<metric>)
    dataset: str  # dataset config (lovt.evaluation.data.DATASETS)
    head: str  # yolov3 | unet | linear
    frozen: bool
    batch_size: int
    max_epochs: int
    patience: int  # early-stopping patience (epochs)
    monitor: str  # validation metric that selects the epoch and the LR
    learning_rate: float  # config lr
    lr_grid: tuple = ()  # candidates tuned on validation; () = config lr, no tuning
    frozen_warmup_steps: int = 0  # fine-tuning only: batches trained with the backbone frozen at warmup_lr
    warmup_lr: float = 1e-3
    weight_decay: float = 1e-6
    lr_patience: int = 3
    lr_factor: float = 0.5
    min_delta: float = 1e-5
    metrics: tuple = field(default=())  # test metrics exported (the first is the table's)

    @property
    def reported(self):
        return self.metrics[0] if self.metrics else self.monitor


def _det(n, name, ev, ds, frozen, bs, ep, pat, lr, grid, monitor="mAP", metrics=("mAP",)):
    return Task(n, name, ev, ds, "yolov3", frozen, bs, ep, pat, monitor, lr, grid, 0 if frozen else 100,
                metrics=metrics)


def _seg(n, name, ev, ds, head, frozen, bs, ep, pat, monitor, lr, grid, warmup=100):
    return Task(n, name, ev, ds, head, frozen, bs, ep, pat, monitor, lr, grid, 0 if frozen else warmup,
                metrics=(monitor,))


TASKS = {t.name: t for t in [
    _det(1, "rsna_finetune_1", "rsna_finetune_1", "rsna_001", False, 8, 500, 20, 1e-4, (3e-4, 1e-4)),
    _det(2, "rsna_finetune_10", "rsna_finetune", "rsna_01", False, 64, 100, 10, 3e-4, (3e-4, 1e-3)),
    _det(3, "rsna_finetune_100", "rsna_finetune_full", "rsna", False, 64, 50, 10, 1e-4, (3e-4, 1e-4)),
    _det(4, "rsna_frozen_1", "rsna_1", "rsna_001", True, 8, 500, 20, 1e-3, (1e-3, 3e-4)),
    _det(5, "rsna_frozen_10", "rsna", "rsna_01", True, 64, 100, 10, 1e-3, ()),  # the "basic" task
    _det(6, "rsna_frozen_100", "rsna_full", "rsna", True, 64, 50, 10, 1e-3, (3e-4, 1e-3)),
    _seg(7, "rsna_seg_linear_1", "rsna_seg_lin_1", "rsna_seg_001", "linear", True, 8, 500, 20, "opacity_dice",
         1e-2, (3e-2, 1e-2, 3e-3, 1e-4)),
    _seg(8, "rsna_seg_linear_10", "rsna_seg_lin", "rsna_seg_01", "linear", True, 64, 100, 10, "opacity_dice",
         3e-2, (3e-2, 1e-2, 3e-3, 1e-3)),
    _seg(9, "rsna_seg_linear_100", "rsna_seg_lin_full", "rsna_seg", "linear", True, 64, 50, 10, "opacity_dice",
         1e-2, (3e-2, 1e-2, 3e-3, 1e-3)),
    _seg(10, "covid_unet_finetune", "covid_unet_finetune", "covid_rural", "unet", False, 8, 100, 20,
         "opacity_dice", 1e-4, (1e-4, 3e-4), warmup=20),
    _seg(11, "covid_unet_frozen", "covid_unet_frozen", "covid_rural", "unet", True, 8, 100, 20, "opacity_dice",
         3e-4, (1e-4, 3e-4, 1e-3)),
    _seg(12, "covid_linear", "covid_lin", "covid_rural", "linear", True, 8, 100, 20, "opacity_dice", 3e-2,
         (3e-2, 1e-2, 3e-3, 1e-3)),
    _seg(13, "pneumothorax_unet_finetune_100", "pneumo_unet_finetune_full", "siim_pneumothorax", "unet", False,
         64, 50, 10, "pneumothorax_dice", 1e-3, (3e-5, 1e-5)),
    _seg(14, "pneumothorax_unet_frozen_100", "pneumo_unet_frozen_full", "siim_pneumothorax", "unet", True, 64,
         50, 10, "pneumothorax_dice", 1e-3, (3e-5, 1e-5)),
    _det(15, "object_finetune_100", "object_finetune_full", "object-cxr", False, 64, 100, 10, 3e-4,
         (1e-3, 3e-4), monitor="froc", metrics=("froc", "mAP")),
    _det(16, "object_frozen_100", "object_frozen_full", "object-cxr", True, 64, 100, 10, 1e-3, (1e-3, 3e-3),
         monitor="froc", metrics=("froc", "mAP")),
    _seg(17, "object_seg_linear_100", "object_seg_lin_full", "object-cxr_seg", "linear", True, 64, 100, 10,
         "avg_dice", 1e-2, (3e-1, 1e-1, 3e-2, 1e-2)),
    _seg(18, "nih_seg_linear", "nih_seg_lin", "nih-cxr_seg", "linear", True, 64, 100, 10, "avg_dice", 1e-2,
         (1e-1, 3e-2, 1e-2)),
]}
BASIC_TASKS = ("rsna_frozen_10",)
EXTENDED_TASKS = tuple(name for name in TASKS if name not in BASIC_TASKS)


def get_task(name, **overrides):
    """A task by name (or its number as a string), with fields overridden (e.g. batch_size=8)."""
    if name.isdigit():
        name = next((t.name for t in TASKS.values() if t.number == int(name)), name)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the 18 tasks are: {', '.join(TASKS)}")
    return replace(TASKS[name], **{k: v for k, v in overrides.items() if v is not None})


def class_names(task):
    """Detection class names (the original's single class per dataset)."""
    return ["foreign_object"] if task.dataset.startswith("object") else ["opacity"]
