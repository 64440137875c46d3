"""Train an image-only baseline on MIMIC-CXR images and export its ResNet-50.

    python lovt/baselines/train.py <config>     # chexpert_100|_30, byol_100|_30, simclr_100|_30, pixelpro_100|_30
        [--name NAME] [--init_weights resnet50-0676ba61.pth] [--dataset mimic-cxr-img_ap-pa_find-impr]
        [--output_dir runs/baselines/NAME] [--models_base_path models] [--resume]

The run folder gets config.json, metrics.csv + TensorBoard, checkpoints/last.pt (every epoch, --resume
continues from it), checkpoints/best.pt (CheXpert, by val/auroc) and checkpoints/backbone_weights.pt (the
torchvision ResNet of the best (CheXpert) or last (SSL) epoch, as the original's export); it is then moved
to <models_base_path>/baselines/<name> (--no_move keeps it). The original starts every baseline from
ImageNet weights: give them as a file with --init_weights (nothing is downloaded); without it the ResNet
starts from random init (a warning says so).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import math
import shutil
import time
import warnings

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T
from tqdm import tqdm

from lovt.baselines.models import BYOL, PixelPro, SimCLR, SupervisedClassifier, warmup_cosine_lr
from shared.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from shared.distributed import seed_everything
from shared.runlog import RunLogger
from shared.timing import StepTimer

# the original's configs/baseline/*.yaml (+ its fixed trainer settings)
_COMMON = {"batch_size": 64, "max_epochs": 100, "seed": 12345}
CONFIGS = {
    "chexpert_100": {"method": "chexpert", "lr": 3e-4, "weight_decay": 1e-6, "train_subset": None},
    "chexpert_30": {"method": "chexpert", "lr": 1e-4, "weight_decay": 1e-6, "train_subset": 0.3},
    "byol_100": {"method": "byol", "lr": 1e-4, "weight_decay": 1e-4, "warmup_epochs": 1, "train_subset": None},
    "byol_30": {"method": "byol", "lr": 3e-5, "weight_decay": 1e-4, "warmup_epochs": 1, "train_subset": 0.3},
    "simclr_100": {"method": "simclr", "lr": 3e-4, "weight_decay": 1e-4, "warmup_epochs": 1, "batch_size": 128,
                   "train_subset": None},
    "simclr_30": {"method": "simclr", "lr": 3e-4, "weight_decay": 1e-4, "warmup_epochs": 1, "batch_size": 128,
                  "train_subset": 0.3},
    "pixelpro_100": {"method": "pixelpro", "lr": 1e-3, "weight_decay": 1e-5, "warmup_epochs": 0, "train_subset": None},
    "pixelpro_30": {"method": "pixelpro", "lr": 1e-3, "weight_decay": 1e-5, "warmup_epochs": 0, "train_subset": 0.3},
}
CONFIGS = {k: {**_COMMON, **v} for k, v in CONFIGS.items()}
for _name, _cfg in CONFIGS.items():  # the 30 % configs train on the first 30 % of the image list
    _cfg["dataset"] = "mimic-cxr-img_ap-pa_find-impr" + ("_03" if _cfg.pop("train_subset") else "")


def ssl_views(size, blur_kernel=23, crop=True, mean=0.5, std=0.5):
    """The original's "SimCLR" (crop=True) / "PixelPro" (crop=False) view transform on tensors in [0, 1]
    (normalized with 0.5 / 0.5: the original's stats lookup misses)."""
    steps = [T.RandomResizedCrop(size, scale=(0.08, 1.0)) if crop else T.Resize((size, size))]
    steps.append(T.RandomApply([T.ColorJitter(brightness=0.8, contrast=0.8, saturation=0, hue=0)], p=0.8))
    if crop:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.RandomApply([T.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=0.5), T.Normalize([mean] * 3, [std] * 3)]
    return T.Compose(steps)


class ImageOnly(Dataset):
    """{'scan': 3 x load x load in [0, 1]} (non-aspect-preserving resize, as the original's wrapper), and
    with `views` two independently augmented views per sample (SimCLR's per-sample augmentation)."""

    def __init__(self, base, load_size=512, views=None):
        self.base, self.views = base, views
        self.load = T.Compose([T.Resize((load_size, load_size)), T.ToImage(), T.ToDtype(torch.float32, scale=True)])

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        x = self.load(item["scan"].convert("L")).expand(3, -1, -1)
        out = {"scan": x, "target": item["target"]}
        if self.views is not None:
            out["view1"], out["view2"] = self.views(x), self.views(x)
        return out


class Labelled(Dataset):
    """CheXpert-supervised items: ScanTransform (LoVT's augmentation; 0.5/0.5 normalization as the original)."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        return {"scan": self.transform(item["scan"]), "target": item["target"]}


def build_learner(method, init_weights, input_size, norm=(0.5, 0.5)):
    if method == "chexpert":
        return SupervisedClassifier(init_weights)
    if method == "byol":
        return BYOL(init_weights)
    if method == "simclr":
        return SimCLR(init_weights)
    return PixelPro(init_weights, augment=ssl_views(input_size, _kernel(input_size), False, *norm))


def _kernel(size):
    k = 23 if size >= 224 else max(3, int(0.1 * size))  # 23 px at 224 (the original's), scaled for tiny runs
    return k + 1 - k % 2


def normalization(datasets, dataset_normalization):
    """(mean, std): 0.5 / 0.5 as the original's baselines, or the train split's statistics."""
    stats = (getattr(datasets["train"], "stats", None) or {}).get("scan", {}) if dataset_normalization else {}
    if dataset_normalization and not stats:
        warnings.warn("--dataset_normalization: the train split has no scan statistics; using 0.5 / 0.5",
                      stacklevel=2)
    return float(stats.get("pixel_mean", 0.5)), float(stats.get("pixel_std", 0.5))


def wrap_datasets(method, datasets, input_size, load_size, per_sample_augment, norm=(0.5, 0.5)):
    if method == "chexpert":
        from lovt.data.transforms import ScanTransform
        stats = {"pixel_mean": norm[0], "pixel_std": norm[1]}
        return {s: Labelled(ds, ScanTransform(image_size=(input_size, input_size), val=s != "train",
                                              dataset_stats=stats)) for s, ds in datasets.items()}
    views = ssl_views(input_size, _kernel(input_size), True, *norm) if method == "simclr" or per_sample_augment \
        else None
    return {s: ImageOnly(ds, load_size, views if method != "pixelpro" else None) for s, ds in datasets.items()}


def train_baseline(config, datasets, out_dir, *, init_weights=None, input_size=224, load_size=512, max_epochs=None,
                   max_steps=None, batch_size=None, device=None, num_workers=0, per_sample_augment=False,
                   dataset_normalization=False,
                   original_zero_warmup_bug=False, resume=False, max_val_batches=None, progress=True):
    """Train one baseline config on {'train', 'validation'} datasets of {'scan': PIL, 'target': (5,)} items;
    returns the path of the exported backbone_weights.pt."""
    cfg = dict(CONFIGS[config]) if isinstance(config, str) else dict(config)
    method = cfg["method"]
    cfg.update({k: v for k, v in {"max_epochs": max_epochs, "batch_size": batch_size}.items() if v})
    out_dir, device = Path(out_dir), torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(cfg["seed"])
    if not init_weights:
        warnings.warn("no --init_weights: the ResNet starts from random init (the original starts from ImageNet)",
                      stacklevel=2)
    norm = normalization(datasets, dataset_normalization)
    model = build_learner(method, init_weights, input_size, norm).to(device)
    data = wrap_datasets(method, datasets, input_size, load_size, per_sample_augment, norm)
    views = None if method == "chexpert" or per_sample_augment or method == "simclr" else \
        ssl_views(input_size, _kernel(input_size), True, *norm)  # BYOL: one draw per batch (the original)
    loaders = {s: DataLoader(ds, batch_size=cfg["batch_size"], shuffle=s == "train",
                             drop_last=s == "train" and len(ds) >= cfg["batch_size"], num_workers=num_workers)
               for s, ds in data.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=3, factor=0.5) \
        if method == "chexpert" else None
    log = RunLogger(out_dir, config={**cfg, "config": config if isinstance(config, str) else None,
                                     "init_weights": str(init_weights), "input_size": input_size, "normalization": norm,
                                     "original_zero_warmup_bug": original_zero_warmup_bug})
    state = {"epoch": 0, "step": 0, "best": -math.inf, "bad_epochs": 0}
    last = out_dir / "checkpoints" / "last.pt"
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if plateau is not None:
            plateau.load_state_dict(ckpt["plateau"])
        state = ckpt["state"]
        set_rng_state(ckpt["rng"])
    t0 = time.perf_counter()
    while state["epoch"] < cfg["max_epochs"] and not (max_steps and state["step"] >= max_steps):
        epoch = state["epoch"]
        if method != "chexpert":  # per-epoch warm-up + cosine (pl_bolts' LinearWarmupCosineAnnealingLR)
            for g in optimizer.param_groups:
                g["lr"] = warmup_cosine_lr(epoch, cfg["lr"], cfg["warmup_epochs"], cfg["max_epochs"],
                                           original_zero_warmup_bug=original_zero_warmup_bug)
        model.train()
        timer = StepTimer(device)
        bar = tqdm(loaders["train"], desc=f"{config} epoch {epoch}", disable=not progress, leave=False)
        for batch in timer.wrap(bar):
            batch = {k: v.to(device) for k, v in batch.items()}
            if views is not None and method == "byol":
                batch["view1"], batch["view2"] = views(batch["scan"]), views(batch["scan"])
            loss = model(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if hasattr(model, "update_target"):
                model.update_target()
            log.log(state["step"], **{"train/loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}, **timer.lap())
            state["step"] += 1
            if max_steps and state["step"] >= max_steps:
                break
        val = validate(model, method, loaders["validation"], device, views, max_val_batches)
        log.log(state["step"], epoch=epoch, **{f"val/{k}": v for k, v in val.items()})
        state["epoch"] += 1
        stop = False
        if method == "chexpert":
            plateau.step(val["auroc"])
            if val["auroc"] > state["best"] + 1e-5:
                state.update(best=val["auroc"], bad_epochs=0)
                save_atomic({"model": model.state_dict(), "epoch": epoch, "val": val},
                            out_dir / "checkpoints" / "best.pt")
            else:
                state["bad_epochs"] += 1
                stop = state["bad_epochs"] >= 10  # EarlyStopping(patience 10)
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                     "plateau": plateau.state_dict() if plateau is not None else {}, "rng": rng_state()}, last)
        if stop:
            break
    log.close()
    if method == "chexpert" and (out_dir / "checkpoints" / "best.pt").is_file():
        model.load_state_dict(load_checkpoint(out_dir / "checkpoints" / "best.pt")["model"])
    export = out_dir / "checkpoints" / "backbone_weights.pt"
    save_atomic({k: v.detach().cpu().clone() for k, v in model.resnet.state_dict().items()}, export)
    print(f"{config}: {state['step']} steps in {time.perf_counter() - t0:.0f} s, exported {export}")
    return export


@torch.no_grad()
def validate(model, method, loader, device, views, max_batches=None):
    """CheXpert: val/auroc (macro over the 5 labels) and loss; SSL: the objective on validation images."""
    from torchmetrics.classification import MultilabelAUROC

    model.eval()
    auroc = MultilabelAUROC(num_labels=5) if method == "chexpert" else None
    total, n = 0.0, 0
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        if views is not None and method == "byol":
            batch["view1"], batch["view2"] = views(batch["scan"]), views(batch["scan"])
        if method == "chexpert":
            logits = model.logits(batch["scan"])
            auroc.update(torch.sigmoid(logits), batch["target"].long())
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"].float())
        else:
            loss = model(batch)
        total += float(loss) * len(batch["scan"])
        n += len(batch["scan"])
    out = {"loss": total / max(n, 1)}
    if auroc is not None:
        out["auroc"] = float(auroc.compute()) if n else 0.0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=sorted(CONFIGS))
    p.add_argument("--name", default=None, help="default: the config name")
    p.add_argument("--dataset", default=None, help="LoVT dataset config name or yaml (default: the config's, "
                   "mimic-cxr-img_ap-pa_find-impr or its _03 variant)")
    p.add_argument("--init_weights", default=None, help="ImageNet ResNet-50 file (torchvision layout)")
    p.add_argument("--output_dir", default=None)
    p.add_argument("--models_base_path", default="models")
    p.add_argument("--no_move", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--load_size", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--max_epochs", type=int, default=None)
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument("--num_workers", type=int, default=10)
    p.add_argument("--device", default=None)
    p.add_argument("--per_sample_augment", action="store_true",
                   help="BYOL: draw augmentations per image (the original draws one per batch)")
    p.add_argument("--dataset_normalization", action="store_true",
                   help="normalize with the train split's mean/std (the original's baselines use 0.5 / 0.5)")
    p.add_argument("--original_zero_warmup_bug", action="store_true",
                   help="PixelPro: reproduce the original's lr = 0 in every epoch (its weights then never change)")
    a = p.parse_args(argv)
    from lovt.data.dataset import load_dataset_config, load_datasets

    name = a.name or a.config
    cfg = CONFIGS[a.config]
    datasets = load_datasets(load_dataset_config(a.dataset or cfg["dataset"]))
    out = Path(a.output_dir or Path("runs") / "baselines" / name)
    export = train_baseline(a.config, {s: datasets[s] for s in ("train", "validation")}, out,
                            init_weights=a.init_weights, input_size=a.input_size, load_size=a.load_size,
                            max_epochs=a.max_epochs, max_steps=a.max_steps, batch_size=a.batch_size, device=a.device,
                            num_workers=a.num_workers, per_sample_augment=a.per_sample_augment,
                            dataset_normalization=a.dataset_normalization,
                            original_zero_warmup_bug=a.original_zero_warmup_bug, resume=a.resume)
    if not a.no_move:
        target = Path(a.models_base_path) / "baselines" / name
        if target.exists():
            raise FileExistsError(f"{target} exists; the run stays in {out} (choose another --name)")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(target))
        export = target / "checkpoints" / "backbone_weights.pt"
    print(f"evaluate with: python lovt/evaluate.py evaluate_baseline_downstream {name} "
          f"--models_base_path {a.models_base_path}  (weights: {export})")


if __name__ == "__main__":
    main()
