"""`make demo-lovt`: a short LoVT pre-training on the sample image-report pairs, then the exported ResNet-50 on
RSNA opacity presence (linear probe on frozen features), pretrained vs random init. CPU, about two minutes.

    python lovt/demo.py [--sample data/sample] [--runs runs] [--epochs 3] [--size 128] [--threads 1]
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import shutil
import time

import numpy as np
import pandas as pd
import torch
import torchvision
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]


def prepare(sample: Path, out: Path) -> Path:
    """Sample data (generated if missing) -> the prepared LoVT dataset under `out`."""
    from lovt.data.mimic_cxr import create_dataset
    from shared.sample_data import generate

    if not (sample / "mimic-cxr-jpg").is_dir() or not (sample / "rsna-pneumonia").is_dir():
        generate(sample, seed=0, only=["mimic-cxr-jpg", "rsna-pneumonia"])
    target = out / "mimic-cxr_ap-pa_dataset"
    if not (target / "dataset_statistics.json").is_file():
        create_dataset(sample / "mimic-cxr-jpg", "mimic-cxr_ap-pa", target_path=target, num_workers=1,
                       overwrite=True)
    return target


def train_sentences(dataset: Path) -> list:
    from lovt.data import ImageTextDataset

    rows = ImageTextDataset(dataset, "train").rows
    return [s for i in range(len(rows)) for s in rows[i]["sentences"]]


def rsna_features(sample: Path, weights, size: int):
    """Global-average-pooled ResNet-50 features of the RSNA sample DICOMs and their opacity labels."""
    import pydicom
    from PIL import Image

    from lovt.data import ScanTransform

    root = sample / "rsna-pneumonia"
    labels = pd.read_csv(root / "stage_2_train_labels.csv").groupby("patientId", sort=True)["Target"].first()
    resnet = torchvision.models.resnet50(weights=None)
    if weights is not None:  # every backbone tensor must match; only the classifier `fc` is absent
        from shared.weights import load_pretrained
        load_pretrained(resnet, weights, min_matched=0.99, verbose=False)
    resnet.fc = torch.nn.Identity()
    resnet.eval()
    images = [Image.fromarray(pydicom.dcmread(root / "stage_2_train_images" / f"{pid}.dcm").pixel_array
                              .astype(np.uint8)) for pid in labels.index]
    stats = [np.asarray(im, dtype=np.float32) / 255 for im in images[:24]]
    norm = {"pixel_mean": float(np.mean([s.mean() for s in stats])),
            "pixel_std": float(np.sqrt(np.mean([s.var() for s in stats]) + np.var([s.mean() for s in stats])))}
    transform = ScanTransform(image_size=(size, size), dataset_stats=norm, val=True)
    with torch.no_grad():
        feats = resnet(torch.stack([transform(im) for im in images])).numpy()
    return feats, labels.to_numpy()


def linear_probe_auroc(feats, labels, n_train=24) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats[:n_train])
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(feats[:n_train]), labels[:n_train])
    return float(roc_auc_score(labels[n_train:], clf.predict_proba(scaler.transform(feats[n_train:]))[:, 1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 keeps the demo fast on a busy 2-core machine)")
    p.add_argument("--no-localized", dest="localized", action="store_false",
                   help="skip the two localized evaluation tasks (RSNA detection and segmentation)")
    args = p.parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)

    import lovt.train as train
    from lovt.models.report_encoder import build_tiny_bert
    from lovt.synthetic import tiny_overrides
    from shared.demo import write_row

    out = Path(args.runs) / "demo" / "lovt"
    dataset = prepare(Path(args.sample), out)
    bert = build_tiny_bert(out / "tiny_bert", train_sentences(dataset))
    models = out / "models"
    shutil.rmtree(models / "pretraining" / "LoVT_demo", ignore_errors=True)
    shutil.rmtree(out / "run", ignore_errors=True)
    overrides = ["+experiment=LoVT_100", "name=LoVT_demo", "pretrain_dataset=mimic-cxr_sample",
                 f"dataset_path={dataset.resolve()}", f"models.base_path={models.resolve()}",
                 f"pretrain_model.max_epochs={args.epochs}", "pretrain_model.learning_rate=1e-3",
                 "trainer.log_every_n_steps=1", "attention_plots=2"]
    overrides += tiny_overrides(bert, size=args.size, batch_size=args.batch_size, arch="resnet50", d=128)
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    print(f"[{time.time() - started:.0f} s] data and tiny BERT ready; pre-training")
    result = train.run_training(cfg, out / "run")
    print(f"[{time.time() - started:.0f} s] pre-training done; RSNA linear probes")
    run = Path(result["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    final_loss = float(metrics["train/total_loss_epoch"].dropna().iloc[-1])

    weights = run / "checkpoints" / "backbone_weights.pt"
    torch.manual_seed(0)
    pretrained = linear_probe_auroc(*rsna_features(Path(args.sample), weights, args.size))
    torch.manual_seed(0)
    random = linear_probe_auroc(*rsna_features(Path(args.sample), None, args.size))
    # the summary plots every column of loss_csv: keep the losses (the full metrics.csv stays in the run)
    keep = ["step"] + [c for c in metrics.columns if c.endswith("total_loss_step") or
                       (c.startswith("val/") and c.endswith("_loss") and "online" not in c)]
    csv = out / "pretrain_losses.csv"
    metrics[keep].to_csv(csv, index=False)
    loss_csv = str(csv.resolve().relative_to(REPO)) if csv.resolve().is_relative_to(REPO) else str(csv)
    row = write_row("lovt", runs=args.runs, data="sample MIMIC-CXR-JPG pairs + RSNA opacity (40 images)",
                    steps=int(result["trainer"].global_step), final_loss=final_loss,
                    metric="RSNA opacity AUROC (linear probe)", pretrained=pretrained, random=random,
                    wall_time_s=round(time.time() - started, 1), loss_csv=loss_csv)
    print(f"LoVT demo: {result['trainer'].global_step} steps, final loss {final_loss:.4f}, RSNA AUROC "
          f"pretrained {pretrained:.3f} vs random {random:.3f}; {time.time() - started:.0f} s -> {row}")
    if args.localized:
        localized_row(args, weights, out, result, final_loss, loss_csv, started)


def localized_row(args, weights, out, result, final_loss, loss_csv, started):
    """Issue 7's demo row: one detection and one segmentation task of the localized evaluation."""
    from lovt.evaluation.demo import run_demo_tasks
    from shared.demo import write_row

    tasks = run_demo_tasks(Path(args.sample), weights, out / "downstream")
    det, seg = tasks["rsna_frozen_100"], tasks["rsna_seg_linear_100"]
    row = write_row("lovt-localized", runs=args.runs, data="sample RSNA (YOLOv3 frozen; linear seg head)",
                    steps=int(result["trainer"].global_step), final_loss=final_loss,
                    metric="mAP / Dice", pretrained=f"{det['pretrained']:.3f} / {seg['pretrained']:.3f}",
                    random=f"{det['random']:.3f} / {seg['random']:.3f}",
                    wall_time_s=round(time.time() - started, 1), loss_csv=loss_csv)
    print(f"LoVT localized tasks: mAP {det['pretrained']:.3f} vs {det['random']:.3f}, Dice "
          f"{seg['pretrained']:.3f} vs {seg['random']:.3f} -> {row}")


if __name__ == "__main__":
    main()
