"""LoVT frozen probe (extra to the original's online CheXpert probes): online columns, offline probe.py."""
import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import lovt.train as train
from lovt import probe
from lovt.synthetic import SyntheticImageTextDataset, build_tiny_language_model, tiny_overrides
from shared.probe import PROBE_COLUMNS


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_language_model(tmp_path_factory.mktemp("bert") / "tiny_bert")


def _run(tiny_bert, tmp_path, overrides):
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=[
            "+experiment=LoVT_100", "name=probe", "export_run=false", "attention_plots=0",
            "pretrain_model.max_epochs=2"] + tiny_overrides(tiny_bert, arch="resnet18") + overrides)
    data = {"train": SyntheticImageTextDataset(12, seed=0), "validation": SyntheticImageTextDataset(8, seed=1)}
    return train.run_training(cfg, tmp_path / "run", datasets=data)


def test_probe_is_off_by_default_and_online_probe_writes_its_columns(tiny_bert, tmp_path):
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        assert compose("train_representation", overrides=["+experiment=LoVT_100"]).probe_every == 0
    result = _run(tiny_bert, tmp_path, ["probe_every=1"])
    metrics = pd.read_csv(Path(result["run_dir"]) / "metrics.csv")
    rows = metrics.dropna(subset=["probe_linear_auroc"])
    assert len(rows) == 2  # one probe per epoch
    assert ((rows[list(PROBE_COLUMNS)] >= 0) & (rows[list(PROBE_COLUMNS)] <= 1)).all().all()
    assert "val/online_chexpert_bin_scan_auroc" in metrics  # the original's online probes are still there

    # offline, on the run's Lightning checkpoint and on random init, over a prepared MIMIC-CXR sample
    from lovt.data.mimic_cxr import create_dataset
    from shared.sample_data import generate

    generate(tmp_path / "sample", seed=0, only=["mimic-cxr-jpg"])
    data = create_dataset(tmp_path / "sample" / "mimic-cxr-jpg", target_path=tmp_path / "prepared", num_workers=1)
    common = ["--data", str(data), "--arch", "resnet18", "--image_size", "64", "--max_per_split", "16"]
    ckpt = Path(result["run_dir"]) / "checkpoints" / "last.ckpt"
    rec = probe.main([str(ckpt), *common])
    assert (rec["n_train"], rec["n_test"]) == (16, 12) and 0 <= rec["probe_linear_auroc"] <= 1
    assert json.loads(Path(f"{ckpt}.probe.json").read_text())["probe_knn_auroc"] == rec["probe_knn_auroc"]
    rand = probe.main(["--random_init", "--out", str(tmp_path / "r.json"), *common])
    assert rand["random_init"] and rand["probe_linear_auroc"] != rec["probe_linear_auroc"]
