"""Hydra configs, a few Lightning training steps, export of backbone_weights.pt, resume."""
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir

import lovt.train as train
from lovt.export import backbone_state_dict
from lovt.models import BiModalModel, model_config
from lovt.synthetic import SyntheticImageTextDataset, build_tiny_language_model, tiny_overrides
from shared.weights import load_pretrained

EXPERIMENTS = sorted(str(p.relative_to(Path(train.CONFIG_DIR) / "experiment").with_suffix(""))
                     for p in (Path(train.CONFIG_DIR) / "experiment").rglob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_language_model(tmp_path_factory.mktemp("bert") / "tiny_bert")


def _compose(overrides):
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        return compose("train_representation", overrides=overrides)


def test_all_original_experiments_exist():
    expected = {"LoVT_100", "LoVT_30", "ConVIRT_100", "ConVIRT_30", "CLIP_100", "CLIP_30"} | {
        f"ablation/{n}" for n in ("no_spatial", "no_weight", "no_weight_no_att", "no_g", "no_l", "g_only",
                                  "g_single_sent_att", "convirt_lr", "no_coslr")}
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment, tiny_bert):
    cfg = _compose([f"+experiment={experiment}"])
    mc = model_config(cfg.pretrain_model)
    assert cfg.monitor_metric == "val/total_loss" and cfg.seed == 12345
    assert cfg.callback.model_checkpoint.monitor == "val/total_loss"
    assert mc.encoder_b.language_encoder == "emilyalsentzer/Bio_ClinicalBERT"
    assert mc.encoder_b.freeze_encoder_layers == 6 and mc.batch_size == 32
    if mc.g_alignment is not None:
        assert mc.g_alignment.similarity_temperature == 0.1 and not mc.g_alignment.negatives_from_same_modality
        assert (mc.loss_weights["global_a2b"], mc.loss_weights["global_b2a"]) == (0.75, 0.25)
    for loss in [*mc.ll_alignments_a.values(), *mc.ll_alignments_b.values()]:
        assert loss.similarity_temperature == 0.3
    # the tiny version of the same experiment builds and produces exactly the weighted losses
    small = model_config(_compose([f"+experiment={experiment}"] + tiny_overrides(tiny_bert, arch="resnet18",
                                                                                  d=8)).pretrain_model)
    model = BiModalModel(small)
    from lovt.data import collate_image_text
    from lovt.models import ReportTokenizer, load_tokenizer

    ds = SyntheticImageTextDataset(2)
    batch = collate_image_text([ds[0], ds[1]])
    batch["report"] = ReportTokenizer(load_tokenizer(str(tiny_bert)))(batch["sentences"])
    _, losses, _, _ = model(batch)
    assert set(losses) == set(small.loss_weights)


def test_lovt_100_values():
    cfg = _compose(["+experiment=LoVT_100"])
    mc = model_config(cfg.pretrain_model)
    assert mc.loss_weights == {"local_a_l2att": 0.375, "local_a_att2l": 0.375, "local_b_l2att": 0.375,
                               "local_b_att2l": 0.375, "global_a2b": 0.75, "global_b2a": 0.25}
    assert (mc.optimizer, mc.learning_rate, mc.weight_decay, mc.max_epochs) == ("AdamW", 1e-4, 1e-6, 100)
    assert mc.lr_scheduler == ["cosine_annealing_per_epoch"] and mc.cosine_annealing_mode == "periodic"
    assert cfg.trainer.accumulate_grad_batches == 16 and cfg.callback.early_stopping.patience == 10
    a = mc.ll_alignments_a["0"]
    assert (a.distance_threshold, a.threshold_type, a.smooth_weights) == (0.5, "relative", True)
    assert mc.encoder_a.global_aggregator == "avgpool_attention" and mc.l_weights_stop_grad
    assert mc.encoder_b.data_augmentation.sentence_shuffling == "random_swaps"
    assert mc.encoder_b.data_augmentation.sentence_sampling is None
    convirt = model_config(_compose(["+experiment=ConVIRT_30"]).pretrain_model)
    assert convirt.projection_norm is None and convirt.learning_rate == 1e-5 and convirt.optimizer == "Adam"
    assert convirt.lr_scheduler == ["reduce_on_plateau"] and convirt.encoder_a.global_aggregator == "avg"


def _run(tiny_bert, tmp_path, name, overrides, arch="resnet18"):
    cfg = _compose(["+experiment=LoVT_100", f"name={name}", f"models.base_path={tmp_path / 'models'}",
                    "attention_plots=2", "pretrain_model.learning_rate=1e-3"]
                   + tiny_overrides(tiny_bert, arch=arch) + overrides)
    data = {"train": SyntheticImageTextDataset(8, seed=0), "validation": SyntheticImageTextDataset(4, seed=1)}
    return train.run_training(cfg, tmp_path / f"run_{name}", datasets=data)


def test_training_loss_falls_and_exports_torchvision_resnet50(tiny_bert, tmp_path):
    result = _run(tiny_bert, tmp_path, "lovt", ["pretrain_model.max_epochs=4"], arch="resnet50")
    run = Path(result["run_dir"])
    assert run == tmp_path / "models" / "pretraining" / "lovt"  # moved into the model store
    metrics = pd.read_csv(run / "metrics.csv")
    per_epoch = metrics.dropna(subset=["train/total_loss_epoch"])["train/total_loss_epoch"].tolist()
    assert len(per_epoch) == 4 and per_epoch[-1] < per_epoch[0]
    assert metrics["val/total_loss"].notna().sum() == 4 and "val/online_chexpert_bin_scan_auroc" in metrics
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("pretrain-epoch") and "=" not in n for n in ckpts)
    assert list((run / "plots").glob("attention_epoch*.png"))
    resnet = torchvision.models.resnet50(weights=None)
    report = load_pretrained(resnet, run / "checkpoints" / "backbone_weights.pt", min_matched=0.99)
    assert sorted(report.missing) == ["fc.bias", "fc.weight"]  # the backbone has no classifier
    assert not report.unexpected and not report.skipped_shape
    # every ResNet tensor (conv, BN incl. running stats) equals the best checkpoint's
    best = torch.load(run / result["best_model_path"].replace(str(tmp_path / "run_lovt"), str(run))
                      .replace("epoch=", "epoch"), weights_only=True)
    state = backbone_state_dict(best["state_dict"])
    own = resnet.state_dict()
    assert set(state) == {k for k in own if not k.startswith("fc.")}
    assert all(torch.equal(own[k], v) for k, v in state.items())
    # warm start of both encoders from the best checkpoint (pretrain_model.load_checkpoint_path)
    from lovt.engine import BiModalModelRepresentationLearner

    config = dict(result["module"].hparams["config"], load_checkpoint_path=str(run / "checkpoints" / "last.ckpt"))
    warm = BiModalModelRepresentationLearner(config)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(warm.state_dict()["model.model_a.project_global.projection_after.weight"],
                       last["model.model_a.project_global.projection_after.weight"])


@pytest.mark.slow
def test_resume_continues_exactly(tiny_bert, tmp_path):
    """Slow-marked duplicate: tests/faults/test_lovt.py::test_kill_resume_bit_identical resumes the same tiny
    LoVT_100 run (2 epochs of 2 steps, resume=<last.ckpt> after epoch 1) after a real kill -9 and checks more:
    bit-identical weights (here within 1e-6) and every metrics.csv row once."""
    common = ["export_run=false", "callback.early_stopping.patience=100", "attention_plots=0"]
    full = _run(tiny_bert, tmp_path, "full", common + ["pretrain_model.max_epochs=2"])
    first = _run(tiny_bert, tmp_path, "part", common + ["pretrain_model.max_epochs=1"])
    ckpt = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    resumed = _run(tiny_bert, tmp_path, "part", common + ["pretrain_model.max_epochs=2", f"resume={ckpt}"])
    assert resumed["trainer"].global_step == full["trainer"].global_step == 4
    a, b = full["module"].state_dict(), resumed["module"].state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), "resumed run diverged"


def test_export_backbone_from_ours_and_original_key_layouts(tmp_path):
    from lovt.export import export_backbone, rename_best

    resnet = torchvision.models.resnet18(weights=None)
    for prefix in ("model.model_a.encoder.feature_extractor.backbone_layers.",
                   "model_a.encoder.feature_extractor.backbone_layers."):
        state = {prefix + k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
        state["model.model_b.encoder.language_model.pooler.dense.weight"] = torch.zeros(2, 2)
        ckpt = tmp_path / "pretrain-epoch=0003.ckpt"
        torch.save({"state_dict": state, "epoch": 3}, ckpt)
        ckpt = rename_best(ckpt)
        assert ckpt.name == "pretrain-epoch0003.ckpt"
        out = export_backbone(ckpt, tmp_path / "backbone_weights.pt")
        exported = torch.load(out, weights_only=True)
        fresh = torchvision.models.resnet18(weights=None)
        missing, unexpected = fresh.load_state_dict(exported, strict=False)
        assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
        assert torch.equal(fresh.conv1.weight, resnet.conv1.weight)
    with pytest.raises(KeyError, match="backbone"):
        from lovt.export import backbone_state_dict

        backbone_state_dict({"something.else": torch.zeros(1)})


def test_datamodule_on_prepared_sample_data(tiny_bert, tmp_path):
    """The real input path: prepared sample MIMIC data -> transforms with train statistics -> tokenised batches."""
    from lovt.data.mimic_cxr import create_dataset
    from lovt.datamodule import PretrainDataModule
    from shared.sample_data import generate

    generate(tmp_path / "sample", seed=0, only=["mimic-cxr-jpg"])
    dataset = create_dataset(tmp_path / "sample" / "mimic-cxr-jpg", target_path=tmp_path / "prepared", num_workers=1)
    # max_length 512: the sample reports (up to ~200 tokens with the tiny vocabulary) are not truncated
    cfg = _compose(["+experiment=LoVT_30", "pretrain_dataset=mimic-cxr_sample"] + tiny_overrides(tiny_bert)
                   + ["pretrain_model.encoder_b.max_length=512"])
    mc = model_config(cfg.pretrain_model)
    dm = PretrainDataModule("mimic-cxr_sample", mc, num_workers=0, dataset_path=str(dataset))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["scan"].shape == (4, 3, 64, 64) and batch["chexpert"].shape == (4, 5)
    assert batch["report"]["sentence_mask"].sum(1).tolist() == [len(s) for s in batch["sentences"]]
    val = next(iter(dm.val_dataloader()))
    stats = dm.datasets["train"].stats["scan"]
    # validation images are not augmented: normalised with the TRAIN split statistics
    assert val["scan"].min() >= (0 - stats["pixel_mean"]) / stats["pixel_std"] - 1e-4
    assert len(dm.datasets["train"]) > len(dm.datasets["validation"]) > 0


@pytest.mark.gpu
def test_mixed_precision_training_on_gpu(tiny_bert, tmp_path):
    for precision in ("16-mixed", "bf16-mixed"):
        result = _run(tiny_bert, tmp_path, f"amp_{precision}", ["pretrain_model.max_epochs=2", "export_run=false",
                                                               f"trainer.precision={precision}",
                                                               "trainer.accelerator=gpu"])
        metrics = pd.read_csv(Path(result["run_dir"]) / "metrics.csv")
        assert metrics["val/total_loss"].dropna().map(math.isfinite).all()


@pytest.mark.slow
def test_command_line_entry_point(tiny_bert, tmp_path):
    """`python lovt/train.py +experiment=... debug=true` through Hydra's main (one batch, CPU)."""
    import os
    import subprocess
    import sys

    from lovt.data.mimic_cxr import create_dataset
    from shared.sample_data import generate

    generate(tmp_path / "sample", seed=0, only=["mimic-cxr-jpg"])
    dataset = create_dataset(tmp_path / "sample" / "mimic-cxr-jpg", target_path=tmp_path / "prepared", num_workers=1)
    repo = Path(train.__file__).resolve().parents[1]
    cmd = [sys.executable, "lovt/train.py", "+experiment=CLIP_30", "debug=true", "pretrain_dataset=mimic-cxr_sample",
           f"dataset_path={dataset}", f"hydra.run.dir={tmp_path / 'run'}", "print_config=false",
           *tiny_overrides(tiny_bert)]
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "hydra" / "config.yaml").is_file()
