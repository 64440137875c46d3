"""Every one of the 18 tasks runs by name on the (prepared) sample data: one training step each (slow), and the
runs spread over GPUs (gpu)."""

import pytest

from lovt.evaluation.data import COVID, NIH, OBJECT, RSNA, SIIM
from lovt.evaluation.engine import run_downstream
from lovt.evaluation.prepare import prepare_covid, prepare_nih, prepare_object_cxr, prepare_rsna, prepare_siim
from lovt.evaluation.protocol import evaluate_task
from lovt.evaluation.tasks import TASKS, get_task


@pytest.fixture(scope="module")
def folders(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    if not (sample_data / "covid-rural").is_dir():
        pytest.skip("the sample data has no covid-rural / object-cxr yet")
    return {RSNA: prepare_rsna(sample_data / "rsna-pneumonia", out=out / "rsna", seed=0),
            SIIM: prepare_siim(sample_data / "siim-acr-pneumothorax", out=out / "siim", seed=0),
            NIH: prepare_nih(sample_data / "chestxray14", out=out / "nih", seed=0, include_no_findings=5),
            COVID: prepare_covid(sample_data / "covid-rural", out=out / "covid", seed=0),
            OBJECT: prepare_object_cxr(sample_data / "object-cxr", out=out / "object", seed=0)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_task_runs_by_name(name, folders, tmp_path):
    task = get_task(name, batch_size=2, frozen_warmup_steps=1)
    size = 32 if task.head == "unet" else 64  # 64: a 1-image batch (1 % of the sample) still has 2x2 conv5 maps
    res = run_downstream(task, "random", tmp_path, input_size=size, where={"folders": folders}, max_epochs=1,
                         max_steps=2, progress=False)
    assert task.monitor in res["val"] and all(m in res["test"] for m in task.metrics)
    assert 0.0 <= res["test"][task.reported] <= 1.0


@pytest.mark.gpu
def test_runs_spread_over_gpus(folders, tmp_path):
    summary = evaluate_task(get_task("rsna_seg_linear_100", batch_size=4), "random", tmp_path, runs=2,
                            tune_lr=False, devices=["cuda:0", "cuda:0"], input_size=64,
                            where={"folders": folders}, max_steps=2, max_epochs=1, progress=False)
    assert summary["metrics"]["opacity_dice"]["num_runs"] == 2
