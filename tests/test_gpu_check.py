"""tools/gpu_check.py (`make gpu-check DEVICE=cpu`) and the multi-node launcher path of every training CLI.

The CPU check of one method (Semantic Genesis: plain, torchrun, kill + resume; about a minute on 2 busy cores)
runs in the CPU suite. The whole CPU check launches about 30 processes, each starting torch, MONAI or Lightning
(~10 s apiece on these cores) and VoCo's smallest SwinUNETR needs 64^3 crops (~20 s a step): ~15 minutes, so
it is marked slow. Likewise the two-node launch: the Genesis CLI here, the other four marked slow.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.timing import StepTimer
from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def _no_simpleitk(tmp_path):
    """A PYTHONPATH folder whose SimpleITK raises on import: the device machine has none."""
    block = tmp_path / "no_sitk"
    block.mkdir()
    (block / "SimpleITK.py").write_text("raise ImportError('SimpleITK is not installed on the device machine')\n")
    return str(block)


def _run_check(tmp_path, *args, timeout=1500):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_no_simpleitk(tmp_path))
    out = tmp_path / "gpu_check"
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--out", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, out


def _assert_passed(report, methods):
    assert [e["method"] for e in report["methods"]] == methods
    for e in report["methods"]:
        assert e["ok"], e["errors"]
        for s in e["stages"]:
            assert s["plain_rc"] == 0 and s["timed_rows"] >= 1, s
            assert s["steps_per_s"] > 0 and s["samples_per_s"] > 0 and 0 <= s["data_wait_share"] <= 1, s
            assert s["flops_per_sample"] > 1e6, s  # counted, not assumed
        pre = e["stages"][0]
        assert pre["torchrun_rc"] == 0
        res = pre["resume"]
        assert res["ok"] and res["killed"] and res["resumed_rc"] == 0
        assert res["loss_after"][0] > res["loss_before"][0] >= 0  # continued after the checkpoint's step


def test_cpu_check_one_method_all_modes_without_simpleitk(tmp_path):
    proc, out = _run_check(tmp_path, "--methods", "semantic_genesis", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS semantic_genesis: pretrain" in proc.stdout and "resumed at step" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    _assert_passed(report, ["semantic_genesis"])
    stages = [s["stage"] for s in report["methods"][0]["stages"]]
    assert stages == ["pretrain", "finetune_segmentation"]
    table = (out / "report.md").read_text()
    assert "| semantic_genesis | pretrain | PASS |" in table and "-> step" in table


@pytest.mark.slow
def test_cpu_check_every_method(tmp_path):
    proc, out = _run_check(tmp_path, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    _assert_passed(json.loads((out / "report.json").read_text()), list(gpu_check.METHODS))


def test_failure_is_reported_and_exit_code_is_one(tmp_path, monkeypatch):
    """A CLI that fails makes its method FAIL (with the log's tail), the report still written, exit 1."""
    def broken(method, out, device, profile=None):
        stage = gpu_check.Stage("pretrain", "shared/no_such_script.py", [], tmp_path / "none.csv", 2, "loss",
                                ddp=False, flops=None)
        return [stage]

    monkeypatch.setattr(gpu_check, "build_stages", broken)
    code = gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "out"), "--methods", "dira",
                           "--modes", "plain"])
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    entry = report["methods"][0]
    assert not entry["ok"] and "pretrain: exit 2" in entry["errors"][0] and "no_such_script" in entry["errors"][0]
    assert "## Failures" in (tmp_path / "out" / "report.md").read_text()


def test_timing_summary_and_peaks():
    rows = [{"step": "1", "step_s": "9.0", "data_wait_s": "9.0"},  # warm-up row: left out
            {"step": "5", "step_s": "0.5", "data_wait_s": "0.1", "peak_mem_gib": "3.0"},
            {"step": "10", "step_s": "0.5", "data_wait_s": "0.0", "peak_mem_gib": "4.0"},
            {"step": "10", "val_loss": "0.3"}]
    t = gpu_check.timing_summary(rows, batch=64)
    assert t["timed_rows"] == 2 and t["steps_per_s"] == pytest.approx(2.0) and t["samples_per_s"] == 128
    assert t["data_wait_share"] == pytest.approx(0.1) and t["peak_mem_gib"] == 4.0
    assert gpu_check.peak_tflops("NVIDIA H200") == 989 and gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989 and gpu_check.peak_tflops("Mystery GPU") is None
    assert gpu_check.peak_tflops("NVIDIA H200", given=500) == 500


def test_step_timer_counts_time_blocked_in_next():
    def slow_loader():
        for i in range(3):
            time.sleep(0.05)
            yield i

    timer = StepTimer()
    seen = []
    for item in timer.wrap(slow_loader()):
        seen.append(item)
        if item == 1:
            first = timer.lap()  # steps 0 and 1
    last = timer.lap()  # step 2
    assert seen == [0, 1, 2]
    assert first["data_wait_s"] >= 0.045 and first["step_s"] >= first["data_wait_s"]
    assert last["data_wait_s"] >= 0.045 and "peak_mem_gib" not in last  # memory only on CUDA
    assert timer.lap() == {}  # no step since the last lap


# ----------------------------------------------------------------------------------- two nodes, one machine

CHECKPOINT = {"semantic_genesis": "*.pt", "transvw": "*.pt", "dira": "checkpoint.pth",
              "voco": "model_final_epoch.pt", "lovt": "last.ckpt"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(method, tmp_path):
    """`torchrun --nnodes=2 --nproc_per_node=1` twice (node ranks 0 and 1, c10d on localhost, gloo, CPU)."""
    out = tmp_path / "check"
    stage = gpu_check.build_stages(method, out, "cpu")[0]
    args = list(stage.variants["torchrun"])
    if method == "lovt":  # Lightning checks its world against torchrun's
        args += ["trainer.num_nodes=2", "trainer.strategy=ddp"]
    endpoint = f"127.0.0.1:{_free_port()}"
    env = gpu_check.child_env("cpu")
    env["PYTHONPATH"] = _no_simpleitk(tmp_path) + os.pathsep + env["PYTHONPATH"]
    agents = []
    for node in (0, 1):
        log_dir = tmp_path / f"node{node}"
        cmd = gpu_check.launcher("torchrun", nnodes=2, node_rank=node, endpoint=endpoint)
        cmd[-1:-1] = [f"--log-dir={log_dir}", "--tee=3"]
        agents.append(subprocess.Popen(cmd + [stage.script] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
    outputs = [a.communicate(timeout=900)[0] for a in agents]
    for node, (agent, text) in enumerate(zip(agents, outputs)):
        assert agent.returncode == 0, f"node {node}:\n{text[-4000:]}"
        assert list((tmp_path / f"node{node}").rglob("stdout.log")), f"node {node} started no worker"
    written = list((out / method / "pretrain_torchrun").rglob(CHECKPOINT[method]))
    assert written, f"rank 0 wrote no {CHECKPOINT[method]} under {out / method / 'pretrain_torchrun'}"


def test_two_nodes_genesis(tmp_path):
    _two_nodes("semantic_genesis", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["transvw", "dira", "voco", "lovt"])
def test_two_nodes_other_methods(method, tmp_path):
    _two_nodes(method, tmp_path)
