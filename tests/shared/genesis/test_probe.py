"""Genesis-family frozen probe: online columns during pre-training, offline probe.py on checkpoints."""

import csv
import json

import pytest
import torch

from semantic_genesis import probe as sg_probe
from semantic_genesis import train
from shared.genesis.data import write_pattern_files
from shared.genesis.probe import Encoder3D, infer_width, nodule_probe_set
from shared.probe import PROBE_COLUMNS
from transvw import probe as tv_probe

SMALL = ["--input_rows", "16", "--input_cols", "16", "--input_deps", "8"]


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    return write_pattern_files(tmp_path_factory.mktemp("patterns"), cubes_per_class=4, n_classes=3,
                               n_val_per_class=2, shape=(16, 16, 8), resolutions=2)


def test_nodule_probe_set_is_labelled_and_split_by_patient(sample_data):
    ps = nodule_probe_set(sample_data / "luna16", (16, 16, 8), neg_per_pos=1)
    assert ps.train_x.shape[1:] == (1, 16, 16, 8) and ps.test_x.shape[1:] == (1, 16, 16, 8)
    assert set(ps.train_y) == {0, 1} and set(ps.test_y) == {0, 1}
    assert 0.0 <= float(ps.train_x.min()) and float(ps.train_x.max()) <= 1.0


def test_online_probe_writes_its_columns(patterns, sample_data, tmp_path):
    train.main(["--data_dir", str(patterns), "--output_dir", str(tmp_path), "--cls_classes", "3",
                "--nb_instances", "4", "--nb_val_instances", "2", "--nb_multires_patch", "2",
                "--batch_size", "4", "--num_workers", "0", "--width", "2", "--n_images", "0",
                "--nb_epoch", "2", "--probe_every", "1", "--probe_data", str(sample_data / "luna16"),
                "--probe_max", "40", *SMALL])
    with open(tmp_path / "en_de" / "semantic_genesis_chest_ct.metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("probe_linear_auroc")]
    assert len(rows) == 2  # one probe per epoch
    for row in rows:
        for col in PROBE_COLUMNS:
            assert 0.0 <= float(row[col]) <= 1.0


def test_probe_every_needs_probe_data(patterns, tmp_path):
    with pytest.raises(ValueError, match="--probe_data"):
        train.main(["--data_dir", str(patterns), "--output_dir", str(tmp_path), "--cls_classes", "3",
                    "--nb_instances", "4", "--nb_val_instances", "2", "--nb_multires_patch", "2", "--num_workers", "0",
                    "--width", "2",
                    "--probe_every", "1"])


def test_offline_probe_on_checkpoint_released_layout_and_random_init(sample_data, tmp_path):
    torch.manual_seed(1)
    enc = Encoder3D(width=2)
    # the released layout: DataParallel keys under a "state_dict" wrapper, with a head left over
    released = {"state_dict": {"module." + k: v for k, v in enc.state_dict().items()}, "epoch": 3}
    released["state_dict"]["module.out_tr.final_conv.weight"] = torch.zeros(1, 4, 1, 1, 1)
    ckpt = tmp_path / "released.pt"
    torch.save(released, ckpt)
    assert infer_width(ckpt) == 2
    data = ["--data", str(sample_data / "luna16"), *SMALL, "--max_per_split", "30"]
    rec = sg_probe.main([str(ckpt), *data])
    assert rec["width"] == 2 and rec["n_test"] > 0
    saved = json.loads((tmp_path / "released.pt.probe.json").read_text())
    assert saved["probe_linear_auroc"] == rec["probe_linear_auroc"]
    rand = tv_probe.main(["--random_init", "--width", "2", "--out", str(tmp_path / "r.json"), *data])
    assert rand["method"] == "TransVW" and (tmp_path / "r.json").is_file()
    with pytest.raises(SystemExit):
        sg_probe.main(data)  # neither a checkpoint nor --random_init
