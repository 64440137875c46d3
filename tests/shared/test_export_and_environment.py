import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.export import METHODS, export

REPO = Path(__file__).resolve().parents[2]


def _requirement_names(path):
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_every_requirement_is_pinned_in_the_constraints():
    pinned = {}
    for line in (REPO / "environments" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version.strip()
    assert pinned["torch"] == "2.12.0" and pinned["torchvision"] == "0.27.0"
    files = [REPO / "environments" / "requirements.txt", REPO / "shared" / "requirements.txt"]
    files += [REPO / m / "requirements.txt" for m in METHODS if (REPO / m / "requirements.txt").exists()]
    for path in files:
        for name in _requirement_names(path):
            assert name in pinned, f"{path.relative_to(REPO)} needs {name}, which constraints.txt does not pin"


def _make_var(var, **overrides):
    args = ["make", "-s", "--no-print-directory", f"print-{var}"] + [f"{k}={v}" for k, v in overrides.items()]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def test_launcher_is_one_process_or_torchrun():
    assert _make_var("LAUNCH") == ".venv/bin/python"
    four = _make_var("LAUNCH", GPUS=4)
    assert "torch.distributed.run --standalone --nproc_per_node=4" in four
    nodes = _make_var("LAUNCH", GPUS=8, NNODES=2, NODE_RANK=1, RDZV_ENDPOINT="node0:29400")
    assert "--nnodes=2 --nproc_per_node=8 --node-rank=1" in nodes and "--rdzv-endpoint=node0:29400" in nodes


@pytest.mark.parametrize("method", METHODS)
def test_exported_copy_runs_on_its_own(method, tmp_path):
    if not (REPO / method / "train.py").is_file():
        pytest.fail(f"{method}/train.py is missing")
    dest = export(method, tmp_path / "copy")
    assert (dest / method / "train.py").is_file() and (dest / "shared" / "unet3d.py").is_file()
    assert (dest / "INSTALL.md").is_file() and (dest / "constraints.txt").is_file()
    assert (dest / "hubconf.py").is_file() and (dest / method / "export.py").is_file()  # release folders load
    assert "pytest" in (dest / "requirements.txt").read_text()
    genesis_family = method in ("semantic_genesis", "transvw")
    assert (dest / "shared" / "genesis" / "pretrain.py").is_file() == genesis_family
    assert (dest / "tests" / "shared" / "genesis").is_dir() == genesis_family
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the copy's own modules are used, from a folder outside the repository
    code = f"import shared, {method}; print(shared.__file__, {method}.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=dest, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(str(dest) in p for p in where.stdout.split())
    smoke = subprocess.run([sys.executable, f"{method}/train.py", "--help"], cwd=dest, env=env,
                           capture_output=True, text=True, timeout=300)
    assert smoke.returncode == 0, smoke.stderr[-2000:]
    assert "usage" in smoke.stdout.lower() or "hydra" in smoke.stdout.lower()


def test_export_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty"):
        export("dira", tmp_path / "x")
