"""tools/gpu_check.py (`make gpu-check METHODS=<m> DEVICE=cpu`), its plan and device table, the one list of
methods, and the multi-node launcher path of every training CLI.

The CPU check of one method (Semantic Genesis: plain + kill/resume, about 1.5 minutes on 2 busy cores) runs in
the CPU suite; the other methods' CPU checks are marked slow (each launches 4-5 processes starting torch,
MONAI or Lightning; VoCo's smallest SwinUNETR needs 64^3 crops). Likewise the two-node launch: the Genesis CLI
here, the other four marked slow.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shared.timing import StepTimer
from tools import gpu_check
from tools.gpu_check_plan import LIMIT_S, PLAN, PROFILES, peak_tflops

ROOT = Path(__file__).resolve().parents[1]


def _no_simpleitk(tmp_path):
    """A PYTHONPATH folder whose SimpleITK raises on import: the device machine has none."""
    block = tmp_path / "no_sitk"
    block.mkdir(exist_ok=True)
    (block / "SimpleITK.py").write_text("raise ImportError('SimpleITK is not installed on the device machine')\n")
    return str(block)


def _run_check(tmp_path, *args, timeout=1500):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_no_simpleitk(tmp_path))
    out = tmp_path / "gpu_check"
    proc = subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", "--out", str(out), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, out


def _assert_passed(report, method):
    assert report["finished"] and [e["method"] for e in report["methods"]] == [method]
    entry = report["methods"][0]
    assert entry["ok"], entry["errors"]
    assert [s["stage"] for s in entry["stages"]][:2] == ["preflight", "data"]
    assert entry["stages"][-1]["stage"] == "flops"
    timed = [s for s in entry["stages"] if s.get("mode") == "plain"]
    assert [s["stage"] for s in timed] == [name for name, _ in PLAN[method][2:-2]]
    for s in timed:
        assert s["rc"] == 0 and s["timed_steps"] >= 1, s
        assert s["steps_per_s"] > 0 and s["samples_per_s"] > 0 and 0 <= s["data_wait_share"] <= 1, s
        assert s["flops_per_sample"] > 1e6, s  # counted, not assumed
    res = next(s for s in entry["stages"] if s.get("mode") == "kill + resume")
    assert res["ok"] and res["killed"] and res["rc"] == 0
    assert res["loss_after"][0] > res["loss_before"][0] >= 0  # continued after the checkpoint's step


def test_cpu_check_one_method_without_simpleitk(tmp_path):
    proc, out = _run_check(tmp_path, "--methods", "semantic_genesis", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS semantic_genesis" in proc.stdout and "resumed at step" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    _assert_passed(report, "semantic_genesis")
    table = (out / "report.md").read_text()
    assert "| semantic_genesis | pretrain | plain | ok |" in table and "-> step" in table
    assert "| semantic_genesis | **total** | | PASS |" in table


@pytest.mark.slow
@pytest.mark.parametrize("method", ["transvw", "dira", "voco", "lovt"])
def test_cpu_check_other_methods(method, tmp_path):
    proc, out = _run_check(tmp_path, "--methods", method, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    _assert_passed(json.loads((out / "report.json").read_text()), method)


def _fake_method(monkeypatch, stages):
    monkeypatch.setattr(gpu_check, "make_data", lambda method, out, device, p: None)
    monkeypatch.setattr(gpu_check, "build_stages", lambda method, out, device, data, p: stages)


def test_failure_is_reported_and_exit_code_is_one(tmp_path, monkeypatch):
    """A CLI that fails makes its method FAIL (with the log's tail), the report still written, exit 1."""
    _fake_method(monkeypatch, [gpu_check.Stage("pretrain", "shared/no_such_script.py", [], tmp_path / "none.csv", 2,
                                               "loss", "fp32")])
    code = gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "out"), "--methods", "dira",
                           "--modes", "plain", "--no_flops"])
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    entry = report["methods"][0]
    assert not entry["ok"] and "pretrain: exit 2" in entry["errors"][0] and "no_such_script" in entry["errors"][0]
    assert "## Failures" in (tmp_path / "out" / "report.md").read_text()


def test_report_is_rewritten_after_every_stage(tmp_path, monkeypatch):
    """The second stage copies report.json as it finds it when it starts, then outlives its timeout: the copy
    already holds the first stage's figures, and the final report keeps them beside the timed-out stage."""
    out = tmp_path / "out"
    first = tmp_path / "first.py"
    first.write_text(textwrap.dedent(f"""
        from pathlib import Path
        rows = ["step,loss,step_s,data_wait_s"] + [f"{{s}},{{1 / s}},0.5,0.1" for s in range(1, 6)]
        Path({str(tmp_path / "first.csv")!r}).write_text("\\n".join(rows) + "\\n")
    """))
    second = tmp_path / "second.py"
    second.write_text(textwrap.dedent(f"""
        import shutil, time
        shutil.copy({str(out / "report.json")!r}, {str(tmp_path / "seen.json")!r})
        time.sleep(60)
    """))
    _fake_method(monkeypatch, [gpu_check.Stage("first", str(first), [], tmp_path / "first.csv", 4, "loss", "fp32"),
                               gpu_check.Stage("second", str(second), [], tmp_path / "second.csv", 4, "loss", "fp32")])
    code = gpu_check.main(["--device", "cpu", "--out", str(out), "--methods", "dira", "--modes", "plain",
                           "--no_flops", "--timeout", "5"])
    assert code == 1
    seen = json.loads((tmp_path / "seen.json").read_text())  # written before the second stage started
    assert not seen["finished"]
    stages = [s["stage"] for s in seen["methods"][0]["stages"]]
    assert stages == ["preflight", "data", "first"]
    first_rec = seen["methods"][0]["stages"][2]
    assert first_rec["ok"] and first_rec["timed_steps"] == 4 and first_rec["samples_per_s"] == pytest.approx(8.0)
    final = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in final["methods"][0]["stages"]] == ["preflight", "data", "first", "second"]
    assert final["methods"][0]["stages"][2] == first_rec
    assert "second: timed out" in final["methods"][0]["errors"][0]
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporary file behind


def test_preflight_lists_everything_missing_at_once(tmp_path, monkeypatch, capsys):
    """Two missing packages and a too small /dev/shm: one message names all three; no stage runs."""
    monkeypatch.setitem(gpu_check.METHOD_NEEDS, "dira", [("no_such_module_a", "no-such-a"),
                                                         ("no_such_module_b", "no-such-b")])
    monkeypatch.setattr(gpu_check, "shm_need_bytes", lambda method, p: 10 ** 18)
    monkeypatch.setattr(gpu_check, "make_data", lambda *a: pytest.fail("a stage ran after a failed pre-flight"))
    code = gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "out"), "--methods", "dira"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("pre-flight: missing") == 1
    assert "no-such-a" in err and "no-such-b" in err and "/dev/shm" in err and "--workers" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["methods"] == [] and len(report["preflight"]["missing"]) == 3


def test_timing_summary_weights_steps_and_leaves_out_warm_up():
    rows = [{"step": "1", "step_s": "9.0", "data_wait_s": "9.0"},  # warm-up: left out
            {"step": "5", "step_s": "2.0", "data_wait_s": "1.0", "peak_mem_gib": "3.0"},  # 4 steps, warm-up too
            {"step": "10", "step_s": "0.5", "data_wait_s": "0.1", "peak_mem_gib": "4.0", "peak_reserved_gib": "6"},
            {"step": "20", "step_s": "0.25", "data_wait_s": "0.0", "peak_mem_gib": "4.0"},
            {"step": "20", "val_loss": "0.3"}]
    t = gpu_check.timing_summary(rows, batch=64, warmup_steps=5)
    assert t["warmup_steps"] == 5 and t["timed_steps"] == 15
    assert t["step_s"] == pytest.approx((5 * 0.5 + 10 * 0.25) / 15)  # weighted by steps, not by rows
    assert t["samples_per_s"] == pytest.approx(64 * 15 / 5.0) and t["data_wait_share"] == pytest.approx(0.1)
    assert t["peak_mem_gib"] == 4.0 and t["peak_reserved_gib"] == 6.0
    per_epoch = [{"step": "1", "step_s": "3.0"}, {"step": "2", "step_s": "1.0"}, {"step": "3", "step_s": "2.0"}]
    t = gpu_check.timing_summary(per_epoch, batch=8, warmup_steps=10, row_steps=40)
    assert t["timed_steps"] == 80 and t["steps_per_s"] == pytest.approx(80 / 120)  # the first epoch left out
    assert gpu_check.timing_summary(per_epoch[:1], batch=8)["timed_steps"] == 1  # one row: kept, flagged by caller


def test_rows_kept_across_a_resume_are_matched_on_step_and_loss():
    """Lightning's CSV writer rewrites the file with more columns when the resumed run logs new ones: the rows
    before the kill are recognised by step and loss, and the first new row is the resumed run's."""
    before = [{"step": "0", "loss": "4.6"}, {"step": "0", "loss": ""}]
    after = [{"step": "0", "loss": "4.6", "x": ""}, {"step": "0", "loss": "", "x": ""}, {"step": "1", "loss": "5.3"}]
    assert gpu_check.kept_rows(before, after, "loss") == 2
    restarted = [{"step": "0", "loss": "4.9"}, {"step": "1", "loss": "4.0"}]  # from scratch: nothing kept
    assert gpu_check.kept_rows(before, restarted, "loss") == 0


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5), ("NVIDIA H100 SXM5 80GB", "bf16", 989.5),
    ("NVIDIA H100 PCIe", "bf16", 756.5), ("NVIDIA H100 NVL", "bf16", 835.5), ("NVIDIA H100 NVL", "fp32", 60.0),
    ("NVIDIA H200", "bf16", 989.5), ("NVIDIA H200 NVL", "bf16", 835.5), ("NVIDIA GH200 480GB", "bf16", 989.5),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0), ("NVIDIA A100 80GB PCIe", "tf32", 156.0),
    ("NVIDIA L40S", "bf16", 362.05), ("NVIDIA L4", "bf16", 121.0), ("NVIDIA L40", "bf16", None),
    ("NVIDIA B200", "bf16", 2250.0), ("NVIDIA H100 80GB HBM3", "tf32", 494.5), ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
    ("NVIDIA H100 80GB HBM3", "fp16", 989.5), ("Mystery GPU", "bf16", None)])
def test_peak_table_matches_device_names(name, precision, peak):
    assert peak_tflops(name, precision) == peak


def test_peak_override_is_the_half_precision_peak_only():
    assert peak_tflops("Mystery GPU", "bf16", given=500) == 500 and peak_tflops("NVIDIA H200", "fp16", given=500) == 500
    assert peak_tflops("NVIDIA H200", "tf32", given=500) is None  # not guessed from the bf16 figure


def test_plan_fits_four_minutes_and_names_the_stages_the_check_runs(tmp_path):
    for method, stages in PLAN.items():
        assert sum(s for _, s in stages) < LIMIT_S == 240, method
    for method in PLAN:
        p = dict(gpu_check.profile(method, "cuda"))
        # every timed CUDA stage holds warm-up + 30 steps; Genesis stops before its partial last batch
        assert p["steps"] >= 40, method
        if method in ("semantic_genesis", "transvw"):
            assert p["steps"] <= p["classes"] * p["per_class"] * 3 // p["batch"]
    assert PROFILES["cuda"]["lovt"]["accumulate"] == 16  # LoVT_100's accumulation, timed per batch


def test_one_list_of_methods():
    from shared import export, methods

    assert gpu_check.METHODS is methods.METHODS and export.METHODS is methods.METHODS
    assert set(PLAN) == set(methods.METHODS)
    make = subprocess.run(["make", "--no-print-directory", "print-ALL_METHODS"], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert make.stdout.split() == list(methods.METHODS)
    usage = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "gpu-check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert usage.returncode != 0 and "METHODS=<one of: semantic_genesis transvw dira voco lovt>" in usage.stdout


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
    p = gpu_check.profile(method, "cpu")
    stage = gpu_check.build_stages(method, out, "cpu", gpu_check.make_data(method, out, "cpu", p), p)[0]
    args = list(stage.launch_args)
    if method == "lovt":  # Lightning checks its world against torchrun's
        args += ["trainer.num_nodes=2", "trainer.strategy=ddp"]
    endpoint = f"127.0.0.1:{_free_port()}"
    env = gpu_check.child_env("cpu")
    env["PYTHONPATH"] = _no_simpleitk(tmp_path) + os.pathsep + env["PYTHONPATH"]
    agents = []
    for node in (0, 1):
        log_dir = tmp_path / f"node{node}"
        cmd = gpu_check.launcher("launch", nnodes=2, node_rank=node, endpoint=endpoint)
        cmd[-1:-1] = [f"--log-dir={log_dir}", "--tee=3"]
        agents.append(subprocess.Popen(cmd + [stage.script] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
    outputs = [a.communicate(timeout=900)[0] for a in agents]
    for node, (agent, text) in enumerate(zip(agents, outputs)):
        assert agent.returncode == 0, f"node {node}:\n{text[-4000:]}"
        assert list((tmp_path / f"node{node}").rglob("stdout.log")), f"node {node} started no worker"
    written = list((out / method / "pretrain_launch").rglob(CHECKPOINT[method]))
    assert written, f"rank 0 wrote no {CHECKPOINT[method]} under {out / method / 'pretrain_launch'}"
    return written


def test_two_nodes_genesis(tmp_path):
    """Also the Genesis engine's DDP run in two processes (world size 2, gloo): it writes plain state dicts (no
    'module.' prefix). That is what tests/transvw/test_transvw.py::test_two_process_ddp_on_cpu (slow-marked)
    checks for TransVW, whose train.py is this engine (shared/genesis/pretrain.py) under another --exp_name."""
    import torch

    for path in _two_nodes("semantic_genesis", tmp_path):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert state and not any(k.startswith("module.") for k in state), path



@pytest.mark.slow
@pytest.mark.parametrize("method", ["transvw", "dira", "voco", "lovt"])
def test_two_nodes_other_methods(method, tmp_path):
    _two_nodes(method, tmp_path)
