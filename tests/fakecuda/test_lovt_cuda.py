"""LoVT pre-training (lovt/train.py run_training, Lightning), 'on cuda' (tests/fakecuda/cuda_shim.py): the
default trainer settings (accelerator auto, one device, 16-mixed) pick the fake GPU; steps with the GradScaler,
checkpoints, resume=last.

Lightning moves the module, loads checkpoints onto the CPU and sets the device itself, so neither start-up
crash of the other CLIs applies here (checked: with resolve_device removed from shared/distributed.py this test
still passes); it covers the Lightning path on the fake GPU: the accelerator and precision chosen, the
module's device placement, the GradScaler skipping an fp16 NaN step (LossWatch finds the scaler in the
precision plugin; without it the run would stop), checkpoints, and resume=last with the data module's state.
"""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import lovt.train as train
from lovt.synthetic import SyntheticImageTextDataset, build_tiny_language_model, tiny_overrides
from shared.guards import FAULT_NAN_STEP_ENV


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return build_tiny_language_model(tmp_path_factory.mktemp("bert") / "tiny_bert")


def run(bert, run_dir, *extra):
    models = Path(run_dir).parent / "models"
    overrides = (["+experiment=LoVT_100", "name=cuda", f"models.base_path={models}", "export_run=false",
                  "callback.early_stopping.patience=100", "attention_plots=0", "pretrain_model.max_epochs=1",
                  "trainer.log_every_n_steps=1", "+logger.csv.flush_logs_every_n_steps=1"]
                 + [o for o in tiny_overrides(bert, arch="resnet18", d=8) if not o.startswith("trainer.precision")]
                 + list(extra))  # the experiment's precision: 16-mixed
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    data = {"train": SyntheticImageTextDataset(8, seed=0), "validation": SyntheticImageTextDataset(4, seed=1)}
    return train.run_training(cfg, run_dir, datasets=data)


def test_lovt_steps_saves_and_resumes_on_cuda(bert, tmp_path, cuda, monkeypatch):
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "0")  # an fp16 overflow at the first step: the GradScaler skips it
    result = run(bert, tmp_path / "run")
    trainer = result["trainer"]
    assert trainer.strategy.root_device == torch.device("cuda", 0) and trainer.precision == "16-mixed"
    assert next(result["module"].parameters()).is_cuda
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    monkeypatch.delenv(FAULT_NAN_STEP_ENV)
    resumed = run(bert, tmp_path / "run", "pretrain_model.max_epochs=2", "resume=last")
    assert resumed["trainer"].global_step == 4
