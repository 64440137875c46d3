"""Fine-tuning after DiRA, following the transfer-learning benchmark DiRA used.

    # multi-label classification (ChestX-ray14's 14 labels): mean AUC over the labels
    python dira/finetune.py classification --data_dir <images> --train_list ... --val_list ... --test_list ... \
        --init dira --proxy_dir checkpoint/DiRA_moco/dira/best_checkpoint.pth
    # binary segmentation (e.g. lungs): Dice and IoU
    python dira/finetune.py segmentation --data_dir <images> --mask_dir <masks> --train_list ... \
        --val_list ... --test_list ... --init random

--init: dira (any DiRA checkpoint, converted by dira.transfer), imagenet (ImageNet-style weights given as
a file with --proxy_dir: a torchvision/timm ResNet state dict; nothing is downloaded), random.
Each trial appends a row to <output_dir>/results.csv and the run prints a results table.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `dira` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import math
import random
import warnings

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from dira import transfer
from dira.data import ImageReadError, load_image, read_image_list
from shared.distributed import seed_everything
from shared.losses import dice_coef_loss
from shared.runfolder import set_metrics_aside
from shared.runlog import RunLogger
from shared.timing import StepTimer
from shared.weights import load_pretrained

NORMALIZATION = {"imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                 "chestx-ray": ([0.5056] * 3, [0.252] * 3), "none": None}


class ListDataset(torch.utils.data.Dataset):
    """Images of a list (with labels) or with masks of the same file name under mask_dir."""

    def __init__(self, data_dir, list_file, transform, mask_dir=None, mask_size=None, anno_percent=100,
                 num_labels=None, resize_masks=False):
        self.paths, self.labels = read_image_list(list_file, data_dir)
        if num_labels is not None and self.labels.shape[1] != num_labels:
            raise ValueError(f"{list_file}: {self.labels.shape[1]} labels per image, but the model predicts "
                             f"{num_labels} (--num_class); train, validation and test lists must have the same "
                             "labels in the same order")
        self.resize_masks = resize_masks  # False: a mask whose size is not its image's is refused
        if anno_percent < 100:  # the benchmark's label fraction: shuffle with Random(99), keep the first p %
            order = list(range(len(self.paths)))
            random.Random(99).shuffle(order)
            order = order[:max(1, int(len(order) * anno_percent / 100))]
            self.paths, self.labels = [self.paths[i] for i in order], self.labels[order]
        self.transform, self.mask_dir, self.mask_size = transform, mask_dir, mask_size
        if mask_dir is not None:
            missing = [p.name for p in self.paths if not (Path(mask_dir) / p.name).is_file()]
            if missing:
                raise FileNotFoundError(f"{len(missing)} mask(s) missing in {mask_dir}, e.g. {missing[:3]}")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = load_image(self.paths[i])
        if self.mask_dir is None:
            return self.transform(img), torch.from_numpy(self.labels[i])
        mask_path = Path(self.mask_dir) / self.paths[i].name
        try:
            mask = Image.open(mask_path).convert("L")
        except Exception as e:
            raise ImageReadError(f"{mask_path}: cannot read mask ({e})") from None
        if mask.size != img.size and not self.resize_masks:  # resizing both would hide a mismatched pair
            raise ImageReadError(f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image "
                                 f"{self.paths[i]} is {img.size[0]}x{img.size[1]} (width x height); give "
                                 "--resize_masks to resize each to --img_size anyway")
        return self.transform(img, mask)


def classification_transforms(size, norm, test_augment):
    """Benchmark transforms: train RandomResizedCrop/flip/rotation 7; val Resize+CenterCrop; test TenCrop."""
    resize = round(size * 256 / 224)
    normalize = [T.Normalize(*NORMALIZATION[norm])] if NORMALIZATION[norm] else []
    to_tensor = T.Compose([T.ToTensor(), *normalize])
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.RandomRotation(7), to_tensor])
    val = T.Compose([T.Resize((resize, resize)), T.CenterCrop(size), to_tensor])
    if not test_augment:
        return train, val, val
    test = T.Compose([T.Resize((resize, resize)), T.TenCrop(size),
                      T.Lambda(lambda crops: torch.stack([to_tensor(c) for c in crops]))])
    return train, val, test


class SegmentationTransform:
    """Nearest-neighbour resize of image and mask (as the benchmark's cv2.INTER_NEAREST); train adds the
    benchmark's augmentation families with torchvision v2 (albumentations is not a dependency):
    brightness/contrast w.p. 0.3, elastic w.p. 0.3, random sized crop w.p. 0.25."""

    def __init__(self, size, norm, train):
        import torchvision.transforms.v2 as v2
        from torchvision import tv_tensors

        self.tv_tensors, self.v2 = tv_tensors, v2
        self.resize = v2.Resize((size, size), interpolation=v2.InterpolationMode.NEAREST)
        self.aug = v2.Compose([
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.3),
            v2.RandomApply([v2.ElasticTransform(alpha=120.0, sigma=6.0)], p=0.3),
            v2.RandomApply([v2.RandomResizedCrop(size, scale=(0.49, 1.0), antialias=True)], p=0.25),
        ]) if train else None
        self.normalize = v2.Normalize(*NORMALIZATION[norm]) if NORMALIZATION[norm] else None

    def __call__(self, img, mask):
        v2, tv = self.v2, self.tv_tensors
        image = tv.Image(v2.functional.pil_to_tensor(img))
        target = tv.Mask((v2.functional.pil_to_tensor(mask) > 0).to(torch.uint8))
        image, target = self.resize(image, target)
        if self.aug is not None:
            image, target = self.aug(image, target)
        image = image.float() / 255.0
        if self.normalize is not None:
            image = self.normalize(image)
        return image.as_subclass(torch.Tensor), target.as_subclass(torch.Tensor).float()


def build_classifier(args):
    """torchvision ResNet with fc -> Sequential(Linear(d, C), Sigmoid) (keys fc.0.*), fc.0 ~ N(0, 0.01)."""
    model = transfer.build_resnet(args.arch)
    init_weights(model, args, "classification")
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, args.num_class), nn.Sigmoid())
    nn.init.normal_(model.fc[0].weight, 0, 0.01)
    nn.init.zeros_(model.fc[0].bias)
    return model


def build_segmenter(args):
    model = transfer.build_unet(args.arch, 1, "sigmoid")
    init_weights(model, args, "segmentation")
    return model


def init_weights(model, args, task):
    """random: as built; dira: the converted DiRA checkpoint (encoder, plus decoder for segmentation);
    imagenet: a ResNet state-dict file into the encoder only, as the benchmark does."""
    if args.init == "random":
        return None
    if args.init == "dira":
        if task == "classification":
            return transfer.load_into_resnet(model, args.proxy_dir)
        return transfer.load_into_unet(model, args.proxy_dir)
    target = model if task == "classification" else model.encoder
    return load_pretrained(target, args.proxy_dir, min_matched=0.9)


def mean_auc(targets, scores):
    """Per-label ROC AUC and their mean over the labels that have both classes in the test set."""
    aucs = []
    for c in range(targets.shape[1]):
        if len(np.unique(targets[:, c])) < 2:
            aucs.append(float("nan"))
        else:
            aucs.append(float(roc_auc_score(targets[:, c], scores[:, c])))
    valid = [a for a in aucs if not math.isnan(a)]
    if len(valid) < len(aucs):
        warnings.warn(f"AUC undefined for {len(aucs) - len(valid)} label(s) with one class in the test set; "
                      "the mean is over the others", stacklevel=2)
    return (float(np.mean(valid)) if valid else float("nan")), aucs


def dice_iou(pred, target):
    """Binary masks NxHxW: global Dice and IoU over all pixels, and their per-image means (empty = 1)."""
    pred, target = pred.bool(), target.bool()
    inter, union = (pred & target).sum().item(), (pred | target).sum().item()
    total = pred.sum().item() + target.sum().item()
    dims = tuple(range(1, pred.dim()))
    i_inter = (pred & target).sum(dims).double()
    i_total = (pred.sum(dims) + target.sum(dims)).double()
    i_union = (pred | target).sum(dims).double()
    per_dice = torch.where(i_total > 0, 2 * i_inter / i_total.clamp(min=1), torch.ones_like(i_total))
    per_iou = torch.where(i_union > 0, i_inter / i_union.clamp(min=1), torch.ones_like(i_union))
    return {"dice": 2 * inter / total if total else 1.0, "iou": inter / union if union else 1.0,
            "mean_dice": per_dice.mean().item(), "mean_iou": per_iou.mean().item()}


def run_epoch(model, loader, criterion, device, optimizer=None, timer=None):
    model.train(optimizer is not None)
    total, n = 0.0, 0
    with torch.set_grad_enabled(optimizer is not None):
        for x, y in timer.wrap(loader) if timer is not None else loader:
            x, y = x.to(device), y.to(device)
            loss = criterion(model(x), y)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total, n = total + loss.item() * x.shape[0], n + x.shape[0]
    return total / max(n, 1)


def train_trial(args, trial, device):
    """Train with best-val-loss selection and early stopping; return the test metrics of the best model."""
    seed_everything(args.seed + trial)
    cls = args.task == "classification"
    if cls:
        train_tf, val_tf, test_tf = classification_transforms(args.img_size, args.normalization, args.test_augment)
        sets = [ListDataset(args.data_dir, lst, tf, anno_percent=pct, num_labels=args.num_class) for lst, tf, pct in
                ((args.train_list, train_tf, args.anno_percent), (args.val_list, val_tf, 100),
                 (args.test_list, test_tf, 100))]
        model = build_classifier(args).to(device)
        criterion = nn.BCELoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=args.patience // 2,
                                                               mode="min", threshold=1e-4, min_lr=0)
    else:
        sets = [ListDataset(args.data_dir, lst, SegmentationTransform(args.img_size, args.normalization, train),
                            mask_dir=args.mask_dir, anno_percent=args.anno_percent if train else 100,
                            resize_masks=args.resize_masks)
                for lst, train in ((args.train_list, True), (args.val_list, False), (args.test_list, False))]
        model = build_segmenter(args).to(device)
        criterion = lambda pred, y: dice_coef_loss(y, pred)  # noqa: E731  (the benchmark's soft Dice)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        scheduler = None
    loaders = [torch.utils.data.DataLoader(s, batch_size=args.batch_size, shuffle=i == 0, num_workers=args.workers,
                                           drop_last=False,
                                           persistent_workers=args.persistent_workers and args.workers > 0)
               for i, s in enumerate(sets)]
    best, best_state, stale = float("inf"), None, 0
    # per-epoch losses and step timing (data_wait_s, step_s) of this trial
    trial_dir = Path(args.output_dir) / f"{args.task}_{args.init}_trial{trial}"
    set_metrics_aside(trial_dir)  # no resume here: an earlier run's log there is kept aside, never appended to
    logger, timer = RunLogger(trial_dir), StepTimer(device)
    for epoch in tqdm(range(args.epochs), desc=f"{args.task} {args.init} trial {trial}", leave=False):
        if not cls:  # the benchmark sets lr0/2 * (1 + cos(pi * (t mod T) / T)) after epoch t
            t = max(epoch - 1, 0)
            for g in optimizer.param_groups:
                g["lr"] = args.lr / 2 * (1 + math.cos(math.pi * (t % args.epochs) / args.epochs))
        train_loss = run_epoch(model, loaders[0], criterion, device, optimizer, timer)
        timing = timer.lap()
        val_loss = run_epoch(model, loaders[1], criterion, device)
        logger.log(epoch + 1, train_loss=train_loss, val_loss=val_loss, **timing)
        if scheduler is not None:
            scheduler.step(val_loss)
        if val_loss < best:
            best, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale > args.patience:
                break
    logger.close()
    model.load_state_dict(best_state)
    model.eval()
    outs, targets = [], []
    with torch.no_grad():
        for x, y in loaders[2]:
            x = x.to(device)
            if cls and x.dim() == 5:  # TenCrop: average the 10 crops' outputs
                n, ncrops = x.shape[:2]
                out = model(x.flatten(0, 1)).view(n, ncrops, -1).mean(1)
            else:
                out = model(x)
            outs.append(out.cpu())
            targets.append(y)
    out, target = torch.cat(outs), torch.cat(targets)
    if cls:
        auc, per_class = mean_auc(target.numpy(), out.numpy())
        return {"mean_auc": auc, "val_loss": best, "epochs": epoch + 1}
    return {**dice_iou(out[:, 0] > 0.5, target[:, 0] > 0.5), "val_loss": best, "epochs": epoch + 1}


def write_results_table(csv_path, md_path):
    """Mean ± std (x100) over the trials of every (task, init, weights, metric) in results.csv."""
    groups = {}
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            groups.setdefault((r["task"], r["init"], r["weights"], r["metric"]), []).append(float(r["value"]))
    lines = ["| task | init | weights | metric | mean ± std (x100) | trials |", "|---|---|---|---|---|---|"]
    for (task, init, weights, metric), values in groups.items():
        lines.append(f"| {task} | {init} | {weights or '-'} | {metric} | "
                     f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f} | {len(values)} |")
    Path(md_path).write_text("\n".join(lines) + "\n")


def get_args_parser():
    p = argparse.ArgumentParser(description="Fine-tune after DiRA (classification or segmentation)")
    p.add_argument("task", choices=["classification", "segmentation"])
    p.add_argument("--data_dir", required=True, help="images folder")
    p.add_argument("--mask_dir", default=None, help="segmentation: masks with the images' file names")
    p.add_argument("--train_list", required=True)
    p.add_argument("--val_list", required=True)
    p.add_argument("--test_list", required=True)
    p.add_argument("--init", default="random", type=str.lower, choices=["random", "imagenet", "dira"])
    p.add_argument("--proxy_dir", default=None, help="weights file for --init dira / imagenet")
    p.add_argument("-a", "--arch", default="resnet50")
    p.add_argument("--num_class", default=14, type=int)
    p.add_argument("--img_size", default=224, type=int)
    p.add_argument("--normalization", default=None, choices=list(NORMALIZATION),
                   help="classification: imagenet (benchmark default); segmentation: none")
    p.add_argument("--batch_size", default=None, type=int, help="32 (classification) / 32 (segmentation)")
    p.add_argument("--epochs", default=None, type=int, help="1000 (classification) / 200 (segmentation)")
    p.add_argument("--lr", default=None, type=float, help="2e-4 (classification) / 1e-3 (segmentation)")
    p.add_argument("--patience", default=None, type=int, help="10 (classification) / 20 (segmentation)")
    p.add_argument("--test_augment", default=True, type=lambda s: s.lower() in ("1", "true", "yes"),
                   help="classification: average TenCrop outputs at test time")
    p.add_argument("--trial", default=1, type=int, help="independent runs")
    p.add_argument("--anno_percent", default=100, type=float,
                   help="percent of the training list used (DiRA's 1/25/50 %% small-data experiments)")
    p.add_argument("--resize_masks", action="store_true",
                   help="segmentation: accept masks of another size than their image (each resized to --img_size, "
                        "as the benchmark); refused by default")
    p.add_argument("--workers", default=2, type=int)
    p.add_argument("--persistent_workers", action="store_true",
        help="keep the loader workers alive between epochs (persistent_workers; off as the original)")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--device", default=None)
    p.add_argument("--output_dir", default="runs/finetune_dira")
    return p


TASK_DEFAULTS = {"classification": dict(normalization="imagenet", batch_size=32, epochs=1000, lr=2e-4, patience=10),
                 "segmentation": dict(normalization="none", batch_size=32, epochs=200, lr=1e-3, patience=20)}


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    for k, v in TASK_DEFAULTS[args.task].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.task == "segmentation" and not args.mask_dir:
        raise SystemExit("segmentation needs --mask_dir")
    if args.init != "random" and not args.proxy_dir:
        raise SystemExit(f"--init {args.init} needs --proxy_dir <weights file> (nothing is downloaded)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [train_trial(args, trial, device) for trial in range(args.trial)]
    keys = [k for k in results[0] if k not in ("val_loss", "epochs")]
    summary = {k: (float(np.mean([r[k] for r in results])), float(np.std([r[k] for r in results]))) for k in keys}
    csv_path = out_dir / "results.csv"
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["task", "init", "weights", "arch", "trial", "metric", "value"])
        for t, r in enumerate(results):
            for k in keys:
                writer.writerow([args.task, args.init, args.proxy_dir or "", args.arch, t, k, f"{r[k]:.6f}"])
    print(f"| task | init | {' | '.join(keys)} |\n|---|---|{'---|' * len(keys)}")
    print(f"| {args.task} | {args.init} | "
          + " | ".join(f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in summary.values()) + " |")
    write_results_table(csv_path, out_dir / "results.md")
    print(f"results appended to {csv_path}; table in {out_dir / 'results.md'}")
    return {k: m for k, (m, _) in summary.items()}


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    main()
