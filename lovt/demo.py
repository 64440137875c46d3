"""`make demo-lovt`: a short LoVT pre-training on sample image-report pairs, then evidence of learning
(issue 18): the pretext itself on held-out studies (image <-> report retrieval, the pre-trained model vs random
inits), and the exported ResNet-50 vs a random-init ResNet-50, both with BatchNorm statistics re-estimated on the
pre-training images, for each of --seeds seeds: the frozen-feature probe (shared.probe: RSNA opacity presence,
linear AUROC of the pooled features, patient-grouped 5-fold x 10) and the localized linear segmentation head on
the RSNA sample (Dice, beside predicting nothing and a raw-pixel baseline), at the pre-training resolution.
The samples are supersets of the shared sample's MIMIC-CXR-JPG and RSNA folders, written under the run folder
(lovt/README.md, "Demo"). CPU, about 3 minutes.

    python lovt/demo.py [--sample data/sample] [--runs runs] [--epochs 4] [--size 64] [--threads 1] [--seeds 3]

Run to run the numbers are the same on one machine: seeds everywhere, deterministic torch kernels, a fixed thread
count, and a tiny-BERT vocabulary that no longer depends on the process (lovt/README.md, "Demo").
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import shutil
import time

import numpy as np
import pandas as pd
import torch
import torchvision
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]


def sample_superset(sample: Path, out: Path, mimic_patients: int, rsna_images: int) -> Path:
    """A sample root under `out` holding mimic-cxr-jpg/ with `mimic_patients` patients and rsna-pneumonia/ with
    `rsna_images` images, written by shared.sample_data's writers with the seeded stream of `sample`'s datasets
    (seed 0), so the first 30 patients and 40 images are exactly those of the shared sample and the rest are
    more of the same kind. Written once (a marker names the sizes); `sample` itself is never changed."""
    import zlib

    from shared.sample_data.mimic import write_mimic
    from shared.sample_data.xray import write_rsna

    root = out / f"sample-{mimic_patients}p-{rsna_images}rsna"
    for name, writer, size in (("mimic-cxr-jpg", write_mimic, {"n_patients": mimic_patients}),
                               ("rsna-pneumonia", write_rsna, {"n_images": rsna_images})):
        target, marker = root / name, root / f".{name}.complete"
        if marker.is_file():
            continue
        shutil.rmtree(target, ignore_errors=True)
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        writer(tmp, np.random.default_rng([0, zlib.crc32(name.encode())]), **size)  # shared.sample_data's stream
        tmp.rename(target)
        marker.write_text(json.dumps(size))
    return root


def prepare(sample: Path, out: Path) -> Path:
    """The sample's MIMIC-CXR-JPG studies -> the prepared LoVT dataset under `out`."""
    from lovt.data.mimic_cxr import create_dataset

    target = out / "mimic-cxr_ap-pa_dataset"
    if not (target / "dataset_statistics.json").is_file():
        create_dataset(sample / "mimic-cxr-jpg", "mimic-cxr_ap-pa", target_path=target, num_workers=1,
                       overwrite=True)
    return target


def train_sentences(dataset: Path) -> list:
    from lovt.data import ImageTextDataset

    rows = ImageTextDataset(dataset, "train").rows
    return [s for i in range(len(rows)) for s in rows[i]["sentences"]]


def probe_transform(rsna: Path, size: int):
    """The probe's and the BatchNorm re-estimation's input transform: LoVT's validation transform at `size` px,
    normalised with the statistics of the first 24 RSNA sample images."""
    from lovt.data import ScanTransform

    stats = [np.asarray(im, dtype=np.float32) / 255 for im in rsna_images(rsna)[1][:24]]
    norm = {"pixel_mean": float(np.mean([s.mean() for s in stats])),
            "pixel_std": float(np.sqrt(np.mean([s.var() for s in stats]) + np.var([s.mean() for s in stats])))}
    return ScanTransform(image_size=(size, size), dataset_stats=norm, val=True)


def rsna_images(rsna: Path):
    """(opacity label per patient, sorted by patient; the patients' images as PIL grey-scale)."""
    import pydicom
    from PIL import Image

    labels = pd.read_csv(rsna / "stage_2_train_labels.csv").groupby("patientId", sort=True)["Target"].first()
    images = [Image.fromarray(pydicom.dcmread(rsna / "stage_2_train_images" / f"{pid}.dcm").pixel_array
                              .astype(np.uint8)) for pid in labels.index]
    return labels, images


def rsna_probe_set(rsna: Path, transform):
    """shared.probe ProbeSet of the RSNA sample DICOMs and their opacity labels, and the patient of every image
    (train then test: the grouping of the probe's folds)."""
    from shared.probe import ProbeSet, split_indices

    labels, images = rsna_images(rsna)
    x = torch.stack([transform(im) for im in images])
    y = labels.to_numpy().astype(np.int64)
    train, test = split_indices(y, 0.3, 0)  # ProbeSet.from_labelled's split, kept to name the patients
    patients = [labels.index[i] for i in np.concatenate([train, test])]
    return ProbeSet(x[train], y[train], x[test], y[test], name="rsna opacity"), patients


def pretraining_images(dataset: Path, transform) -> torch.Tensor:
    """The first view of every training study of the prepared pre-training dataset, through `transform`: the
    images BatchNorm statistics are re-estimated on (no downstream image is among them)."""
    from lovt.data import ImageTextDataset
    from lovt.data.dataset import open_image

    ds = ImageTextDataset(dataset, "train")
    return torch.stack([transform(open_image(ds.image_path(row, 0), None).convert("L")) for row in ds.rows])


def reestimate_batchnorm(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.nn.Module:
    """Recompute every BatchNorm's running mean and variance as the plain average over `images` (train-mode
    passes without gradients, momentum None), then leave `net` in eval mode. Why: a frozen ResNet runs on its
    running statistics, which a demo-length pre-training has moved only part of the way (momentum 0.1) and a
    random init has never moved (mean 0, variance 1); re-estimating them for both arms compares the weights,
    not how far the statistics got."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            net(images[i:i + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return net.eval()


def resnet50_backbone():
    resnet = torchvision.models.resnet50(weights=None)
    resnet.fc = torch.nn.Identity()
    return resnet


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
    p.add_argument("--mimic_patients", type=int, default=60,
                   help="patients of the demo's MIMIC sample (30: the shared sample's; more: a superset, see README)")
    p.add_argument("--rsna_images", type=int, default=120,
                   help="images of the demo's RSNA sample (40: the shared sample's; more: a superset)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--scan_augment", action=argparse.BooleanOptionalAction, default=False,
                   help="the original's scan augmentation in pre-training (off by default in the demo: README)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 keeps the demo fast on a busy 2-core machine)")
    p.add_argument("--seeds", type=int, default=3, help="downstream seeds (0, 1, ...)")
    p.add_argument("--pretext_inits", type=int, default=10, help="random inits compared on the pretext")
    p.add_argument("--seg_steps", type=int, default=20, help="steps of the linear segmentation head per seed")
    p.add_argument("--det_steps", type=int, default=0,
                   help="steps of the frozen YOLOv3 per seed (0: skip; mAP stays 0 in any CPU budget, see README)")
    args = p.parse_args(argv)
    started = time.time()

    import lovt.train as train
    from lovt.models.report_encoder import build_tiny_bert
    from lovt.synthetic import tiny_overrides
    from shared.demo import make_deterministic, metric, probe_metric, probe_over_seeds, write_row

    make_deterministic(0, args.threads)
    out = Path(args.runs) / "demo" / "lovt"
    sample = Path(args.sample)
    if not (sample / "mimic-cxr-jpg").is_dir() or not (sample / "rsna-pneumonia").is_dir():
        from shared.sample_data import generate
        generate(sample, seed=0, only=["mimic-cxr-jpg", "rsna-pneumonia"])
    if (args.mimic_patients, args.rsna_images) != (30, 40):
        sample = sample_superset(sample, out, args.mimic_patients, args.rsna_images)
    dataset = prepare(sample, out / sample.name)
    bert = build_tiny_bert(out / "tiny_bert", train_sentences(dataset))
    models = out / "models"
    shutil.rmtree(models / "pretraining" / "LoVT_demo", ignore_errors=True)
    shutil.rmtree(out / "run", ignore_errors=True)
    shutil.rmtree(out / "downstream", ignore_errors=True)
    shutil.rmtree(Path(args.runs) / "demo" / "lovt-localized", ignore_errors=True)  # its tasks are in this row now
    overrides = ["+experiment=LoVT_100", "name=LoVT_demo", "pretrain_dataset=mimic-cxr_sample",
                 f"dataset_path={dataset.resolve()}", f"models.base_path={models.resolve()}",
                 f"pretrain_model.max_epochs={args.epochs}", f"pretrain_model.learning_rate={args.lr}",
                 "pretrain_model.cosine_annealing_mode=once",
                 f"pretrain_model.encoder_a.data_augmentation.augment={str(args.scan_augment).lower()}",
                 "trainer.log_every_n_steps=1", "attention_plots=2"]
    overrides += tiny_overrides(bert, size=args.size, batch_size=args.batch_size, arch="resnet50", d=128)
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    print(f"[{time.time() - started:.0f} s] data and tiny BERT ready; pre-training")
    result = train.run_training(cfg, out / "run")
    print(f"[{time.time() - started:.0f} s] pre-training done; pretext, RSNA probe and localized tasks")
    run = Path(result["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    final_loss = float(metrics["train/total_loss_epoch"].dropna().iloc[-1])
    weights = run / "checkpoints" / "backbone_weights.pt"

    from shared.weights import load_pretrained
    seeds, inits = list(range(args.seeds)), list(range(args.pretext_inits))
    pretext = pretext_scores(cfg, result["module"].model, inits)
    print(f"[{time.time() - started:.0f} s] pretext on {pretext['n']} held-out studies: image->report R@5 "
          f"{pretext['image_to_report_r5_pretrained'][0]:.3f} vs {np.round(pretext['image_to_report_r5_random'], 3)}")
    transform = probe_transform(sample / "rsna-pneumonia", args.size)
    calibration = pretraining_images(dataset, transform)  # BatchNorm statistics of both arms, downstream
    probe_set, patients = rsna_probe_set(sample / "rsna-pneumonia", transform)

    def random_encoder():
        return reestimate_batchnorm(resnet50_backbone(), calibration)

    def load_and_reestimate(net):
        load_pretrained(net, weights, min_matched=0.99, verbose=False)
        reestimate_batchnorm(net, calibration)

    probe = probe_over_seeds(probe_set, random_encoder, load_and_reestimate, seeds[:1], groups=patients,
                             random_inits=3)
    print(f"[{time.time() - started:.0f} s] probe AUROC over {len(probe['seeds'])} folds: pretrained "
          f"{np.mean(probe['pretrained']):.3f} random {np.mean(probe['random']):.3f} raw {np.mean(probe['raw']):.3f}")
    pretrained_file, random_files = backbone_files(weights, calibration, out / "downstream" / "backbones", seeds)
    localized = localized_tasks(args, sample, pretrained_file, random_files, out, seeds, started)
    # the summary plots every column of loss_csv: keep the losses (the full metrics.csv stays in the run)
    keep = ["step"] + [c for c in metrics.columns if c.endswith("total_loss_step") or
                       (c.startswith("val/") and c.endswith("_loss") and "online" not in c)]
    csv = out / "pretrain_losses.csv"
    metrics[keep].to_csv(csv, index=False)
    loss_csv = str(csv.resolve().relative_to(REPO)) if csv.resolve().is_relative_to(REPO) else str(csv)
    n = pretext["n"]
    rows = [metric("pretext", f"{n} held-out studies, {direction.replace('_', ' ')} R@{k} (chance {k / n:.3f}); "
                   f"one pre-training run vs {len(inits)} random inits", inits,
                   pretext[f"{direction}_r{k}_pretrained"], pretext[f"{direction}_r{k}_random"],
                   trivial=min(1.0, k / n))
            for direction in ("image_to_report", "report_to_image") for k in (1, 5)]
    positives = int(probe_set.train_y.sum() + probe_set.test_y.sum())
    rows.append(probe_metric(f"RSNA opacity ({len(patients)} images, {positives} positive), linear AUROC, "
                             "patient-grouped 5-fold x 10", probe))
    rows += [metric("fine-tune", f"{name} ({args.size} px); trivial: predict nothing", seeds, v["pretrained"],
                    v["random"], trivial=0.0, raw=v["raw"]) for name, v in localized.items()]
    row = write_row("lovt", runs=args.runs, data=f"sample MIMIC-CXR-JPG pairs ({args.mimic_patients} patients); RSNA "
                    f"sample ({args.rsna_images} images) downstream",
                    steps=int(result["trainer"].global_step), final_loss=final_loss, metrics=rows,
                    wall_time_s=round(time.time() - started, 1), loss_csv=loss_csv,
                    seen=f"pretext: 0 of {n} validation + test studies trained on; probe and localized tasks: RSNA "
                         "images, none in pre-training (another dataset); BatchNorm statistics of both arms "
                         "re-estimated on the pre-training images")
    (out / "seeds.json").write_text(json.dumps({"seeds": seeds, "pretext_inits": inits, "pretext": pretext,
                                                "probe": probe["all"], "localized": localized}, indent=2))
    print(f"LoVT demo: {result['trainer'].global_step} steps, final loss {final_loss:.4f}; "
          f"{time.time() - started:.0f} s -> {row}")


def backbone_files(weights, calibration, out, seeds):
    """The localized tasks' backbones as weight files with re-estimated BatchNorm statistics (see
    reestimate_batchnorm): the pre-trained ResNet-50 once, and a random init per seed (torch.manual_seed(seed)).
    Returns (pre-trained file, {seed: random-init file})."""
    from shared.checkpoint import save_atomic
    from shared.weights import load_pretrained

    def save(net, path):
        save_atomic({k: v.detach().clone() for k, v in net.state_dict().items()}, path)
        return path

    out.mkdir(parents=True, exist_ok=True)
    net = resnet50_backbone()
    load_pretrained(net, weights, min_matched=0.99, verbose=False)
    pretrained = save(reestimate_batchnorm(net, calibration), out / "pretrained_bn.pt")
    random_init = {}
    for seed in seeds:
        torch.manual_seed(seed)
        random_init[seed] = save(reestimate_batchnorm(resnet50_backbone(), calibration), out / f"random{seed}_bn.pt")
    return pretrained, random_init


def pixel_dice(pred, target) -> float:
    """2 TP / (2 TP + FP + FN) over every pixel of a split (SegmentationMetrics' Dice); 0 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    denominator = pred.sum() + target.sum()
    return float(2 * (pred & target).sum() / denominator) if denominator else 0.0


def raw_segmentation_dice(prepared: Path, task_name: str, size: int, seed: int) -> float:
    """The raw-input baseline of a segmentation task (shared.demo.raw_segmentation: a per-pixel logistic
    regression on the normalised pixel and its local means) fitted on the task's training split and scored
    on its test split at `size` px, by the task's Dice."""
    from lovt.evaluation.data import RSNA, build_split
    from lovt.evaluation.tasks import get_task
    from shared.demo import raw_segmentation

    dataset = get_task(task_name).dataset

    def arrays(split):
        ds = build_split(dataset, split, size, folders={RSNA: prepared})
        items = [ds[i] for i in range(len(ds))]  # by index: a training split wraps around, never ending a loop
        return (torch.stack([it["scan"][0] for it in items]).numpy(),
                torch.stack([it["masks"][0] for it in items]).numpy())

    (train_x, train_y), (test_x, test_y) = arrays("train"), arrays("test")
    pred = raw_segmentation(train_x, train_y, test_x, pixel_dice, seed=seed)
    return pixel_dice(pred, test_y > 0)


def localized_tasks(args, sample, pretrained, random_init, out, seeds, started):
    """Per seed: the RSNA linear segmentation head (Dice) and, unless --det_steps 0, frozen YOLOv3 (mAP), at the
    pre-training resolution (--size), from the BatchNorm-re-estimated backbones of backbone_files; the
    segmentation row also gets its raw-input baseline."""
    from lovt.evaluation.demo import prepare_sample_rsna, run_demo_tasks

    prepared = prepare_sample_rsna(sample, out / "downstream" / "prepared" / "rsna")  # once for every seed
    tasks = {"rsna_seg_linear_100": ("RSNA opacity segmentation, linear head on frozen features: Dice",
                                     args.seg_steps)}
    if args.det_steps:
        tasks["rsna_frozen_100"] = ("RSNA opacity detection, frozen YOLOv3: mAP", args.det_steps)
    found = {name: {"pretrained": [], "random": [], "raw": []} for name, _ in tasks.values()}
    for seed in seeds:
        for task, (name, steps) in tasks.items():
            res = run_demo_tasks(sample, pretrained, out / "downstream" / f"seed{seed}", tasks=(task,), seed=seed,
                                 max_steps=steps, max_epochs=max(2, steps), input_size=args.size,  # pre-training's
                                 random_weights=random_init[seed], prepared_rsna=prepared)[task]
            found[name]["pretrained"].append(res["pretrained"])
            found[name]["random"].append(res["random"])
            if task.startswith("rsna_seg"):
                found[name]["raw"].append(raw_segmentation_dice(prepared, task, args.size, seed))
            raw = f", raw {found[name]['raw'][-1]:.3f}" if found[name]["raw"] else ""
            print(f"[{time.time() - started:.0f} s] seed {seed} {task}: {res['pretrained']:.3f} vs "
                  f"{res['random']:.3f}{raw}")
    for scores in found.values():
        if not scores["raw"]:
            scores["raw"] = None
    return found


def pretext_scores(cfg, model, seeds):
    """On the validation and test splits of the pre-training dataset (studies never trained on; the validation
    loss picked the checkpoint): LoVT's global alignment as retrieval, image -> report and report -> image
    recall at 1 and 5 (cosine of the projected global embeddings; chance k/N), for the pre-trained model (one
    run: the same score repeated per seed) and, per seed, a random one built with it (its scan and report
    encoders as pre-training starts them). The held-out studies go through as one batch with BatchNorm on that
    batch's statistics for both models (the pre-trained running statistics have had a few dozen momentum
    updates, a random model's none; no label is involved), dropout off. Returns {"n": N,
    "<direction>_r<k>_<arm>": [per seed]}."""
    import copy

    from lovt.engine import BiModalModelRepresentationLearner
    from lovt.fast_data import FastPretrainDataModule
    from lovt.models.config import model_config

    config = model_config(cfg.pretrain_model)
    data = FastPretrainDataModule(cfg.pretrain_dataset, config, num_workers=0, dataset_path=cfg.dataset_path)
    data.setup("test")
    held_out = torch.utils.data.ConcatDataset([data.datasets["validation"], data.datasets["test"]])
    batch = next(iter(torch.utils.data.DataLoader(held_out, batch_size=len(held_out), collate_fn=data.collate)))

    def recalls(net):
        net = copy.deepcopy(net).eval()
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
        with torch.no_grad():
            a = torch.nn.functional.normalize(net.model_a(batch["scan"])["zg"], dim=1)
            b = torch.nn.functional.normalize(net.model_b(**batch["report"])["zg"], dim=1)
        sim = a @ b.T
        truth = torch.arange(len(sim))
        out = {}
        for direction, s in (("image_to_report", sim), ("report_to_image", sim.T)):
            rank = (s > s[truth, truth][:, None]).sum(1)  # how many candidates score above the true pair
            for k in (1, 5):
                out[f"{direction}_r{k}"] = float((rank < k).float().mean())
        return out

    found = {"n": len(batch["scan"])}
    pretrained = recalls(model)
    for seed in seeds:
        torch.manual_seed(seed)
        random_model = BiModalModelRepresentationLearner(cfg.pretrain_model, dataset=cfg.pretrain_dataset,
                                                         models_base_path=cfg.models.base_path).model
        for arm, scores in (("pretrained", pretrained), ("random", recalls(random_model))):
            for key, value in scores.items():
                found.setdefault(f"{key}_{arm}", []).append(value)
    return found


if __name__ == "__main__":
    main()
