"""`make demo-lovt`: a short LoVT pre-training on the sample image-report pairs, then the exported ResNet-50 vs a
random-init ResNet-50, for each of --seeds seeds: the frozen-feature probe (shared.probe: RSNA opacity presence,
linear AUROC of the pooled features, a seeded 70/30 split) and two of the localized evaluation tasks on the RSNA
sample (linear segmentation head: Dice; frozen YOLOv3: mAP), seeded. CPU, a few minutes.

    python lovt/demo.py [--sample data/sample] [--runs runs] [--epochs 3] [--size 128] [--threads 1] [--seeds 3]

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


def rsna_probe_set(sample: Path, size: int):
    """shared.probe ProbeSet of the RSNA sample DICOMs (val transform at `size` px) and their opacity labels,
    and the patient of every image (train then test: the grouping of the probe's folds)."""
    import pydicom
    from PIL import Image

    from lovt.data import ScanTransform
    from shared.probe import ProbeSet, split_indices

    root = sample / "rsna-pneumonia"
    labels = pd.read_csv(root / "stage_2_train_labels.csv").groupby("patientId", sort=True)["Target"].first()
    images = [Image.fromarray(pydicom.dcmread(root / "stage_2_train_images" / f"{pid}.dcm").pixel_array
                              .astype(np.uint8)) for pid in labels.index]
    stats = [np.asarray(im, dtype=np.float32) / 255 for im in images[:24]]
    norm = {"pixel_mean": float(np.mean([s.mean() for s in stats])),
            "pixel_std": float(np.sqrt(np.mean([s.var() for s in stats]) + np.var([s.mean() for s in stats])))}
    transform = ScanTransform(image_size=(size, size), dataset_stats=norm, val=True)
    x = torch.stack([transform(im) for im in images])
    y = labels.to_numpy().astype(np.int64)
    train, test = split_indices(y, 0.3, 0)  # ProbeSet.from_labelled's split, kept to name the patients
    patients = [labels.index[i] for i in np.concatenate([train, test])]
    return ProbeSet(x[train], y[train], x[test], y[test], name="rsna opacity"), patients


def resnet50_backbone():
    resnet = torchvision.models.resnet50(weights=None)
    resnet.fc = torch.nn.Identity()
    return resnet


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", default="data/sample")
    p.add_argument("--runs", default="runs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 keeps the demo fast on a busy 2-core machine)")
    p.add_argument("--seeds", type=int, default=3, help="downstream seeds (0, 1, ...)")
    p.add_argument("--seg_steps", type=int, default=30, help="steps of the linear segmentation head per seed")
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
    dataset = prepare(Path(args.sample), out)
    bert = build_tiny_bert(out / "tiny_bert", train_sentences(dataset))
    models = out / "models"
    shutil.rmtree(models / "pretraining" / "LoVT_demo", ignore_errors=True)
    shutil.rmtree(out / "run", ignore_errors=True)
    shutil.rmtree(out / "downstream", ignore_errors=True)
    shutil.rmtree(Path(args.runs) / "demo" / "lovt-localized", ignore_errors=True)  # its tasks are in this row now
    overrides = ["+experiment=LoVT_100", "name=LoVT_demo", "pretrain_dataset=mimic-cxr_sample",
                 f"dataset_path={dataset.resolve()}", f"models.base_path={models.resolve()}",
                 f"pretrain_model.max_epochs={args.epochs}", "pretrain_model.learning_rate=1e-3",
                 "trainer.log_every_n_steps=1", "attention_plots=2"]
    overrides += tiny_overrides(bert, size=args.size, batch_size=args.batch_size, arch="resnet50", d=128)
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    print(f"[{time.time() - started:.0f} s] data and tiny BERT ready; pre-training")
    result = train.run_training(cfg, out / "run")
    print(f"[{time.time() - started:.0f} s] pre-training done; RSNA probes and localized tasks")
    run = Path(result["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    final_loss = float(metrics["train/total_loss_epoch"].dropna().iloc[-1])
    weights = run / "checkpoints" / "backbone_weights.pt"

    from shared.weights import load_pretrained
    seeds = list(range(args.seeds))
    pretext = pretext_scores(cfg, result["module"].model, seeds)
    print(f"[{time.time() - started:.0f} s] pretext on {pretext['n']} held-out studies: image->report R@1 "
          f"{pretext['image_to_report_r1_pretrained']} vs {pretext['image_to_report_r1_random']}")
    probe_set, patients = rsna_probe_set(Path(args.sample), args.size)
    probe = probe_over_seeds(probe_set, resnet50_backbone,
                             lambda net: load_pretrained(net, weights, min_matched=0.99, verbose=False), seeds[:1],
                             groups=patients, random_inits=3)
    print(f"[{time.time() - started:.0f} s] probe AUROC over {len(probe['seeds'])} folds: pretrained "
          f"{np.mean(probe['pretrained']):.3f} random {np.mean(probe['random']):.3f} raw {np.mean(probe['raw']):.3f}")
    localized = localized_tasks(args, weights, out, seeds, started)
    # the summary plots every column of loss_csv: keep the losses (the full metrics.csv stays in the run)
    keep = ["step"] + [c for c in metrics.columns if c.endswith("total_loss_step") or
                       (c.startswith("val/") and c.endswith("_loss") and "online" not in c)]
    csv = out / "pretrain_losses.csv"
    metrics[keep].to_csv(csv, index=False)
    loss_csv = str(csv.resolve().relative_to(REPO)) if csv.resolve().is_relative_to(REPO) else str(csv)
    n = pretext["n"]
    rows = [metric("pretext", f"{n} held-out studies, {direction.replace('_', ' ')} R@{k} (chance {k / n:.3f})",
                   seeds, pretext[f"{direction}_r{k}_pretrained"], pretext[f"{direction}_r{k}_random"],
                   trivial=min(1.0, k / n))
            for direction in ("image_to_report", "report_to_image") for k in (1, 5)]
    rows.append(probe_metric(f"RSNA opacity ({len(patients)} images), linear AUROC, patient-grouped 5-fold x 10",
                             probe))
    rows += [metric("fine-tune", f"{name}; trivial: predict nothing; raw baseline owed", seeds, v["pretrained"],
                    v["random"], trivial=0.0) for name, v in localized.items()]
    row = write_row("lovt", runs=args.runs, data="sample MIMIC-CXR-JPG pairs; RSNA sample downstream",
                    steps=int(result["trainer"].global_step), final_loss=final_loss, metrics=rows,
                    wall_time_s=round(time.time() - started, 1), loss_csv=loss_csv,
                    seen=f"pretext: 0 of {n} validation + test studies trained on; probe and localized tasks: RSNA "
                         "images, none in pre-training (another dataset)")
    (out / "seeds.json").write_text(json.dumps({"seeds": seeds, "pretext": pretext, "probe": probe["all"],
                                                "localized": localized}, indent=2))
    print(f"LoVT demo: {result['trainer'].global_step} steps, final loss {final_loss:.4f}, RSNA probe AUROC "
          f"pretrained {probe['pretrained']} vs random {probe['random']}; {time.time() - started:.0f} s -> {row}")


def localized_tasks(args, weights, out, seeds, started):
    """Per seed: the RSNA linear segmentation head (Dice) and, unless --det_steps 0, frozen YOLOv3 (mAP), at the
    pre-training resolution (--size)."""
    from lovt.evaluation.demo import run_demo_tasks

    tasks = {"rsna_seg_linear_100": ("RSNA opacity segmentation, linear head on frozen features: Dice",
                                     args.seg_steps)}
    if args.det_steps:
        tasks["rsna_frozen_100"] = ("RSNA opacity detection, frozen YOLOv3: mAP", args.det_steps)
    found = {name: {"pretrained": [], "random": []} for name, _ in tasks.values()}
    for seed in seeds:
        for task, (name, steps) in tasks.items():
            res = run_demo_tasks(Path(args.sample), weights, out / "downstream" / f"seed{seed}", tasks=(task,),
                                 seed=seed, max_steps=steps, max_epochs=max(2, steps),
                                 input_size=args.size)[task]  # the pre-training resolution
            found[name]["pretrained"].append(res["pretrained"])
            found[name]["random"].append(res["random"])
            print(f"[{time.time() - started:.0f} s] seed {seed} {task}: {res['pretrained']:.3f} vs {res['random']:.3f}")
    return found


def pretext_scores(cfg, model, seeds):
    """Per seed, on the validation and test splits of the pre-training dataset (studies never trained on; the
    validation loss picked the checkpoint; the test split alone holds 5 studies of the sample): LoVT's global
    alignment as retrieval, image -> report and report -> image recall at 1 and 5 (cosine of the projected
    global embeddings; chance k/N), for the pre-trained model and a random one built with the seed (its scan
    and report encoders as pre-training starts them). The held-out studies go through as one batch with
    BatchNorm on that batch's statistics for both models (the pre-trained running statistics have had a
    handful of updates, a random model's none), dropout off. Returns {"<direction>_r<k>_<arm>": [...]}."""
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
