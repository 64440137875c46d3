"""Copy one method, with shared/ and its tests, into a folder that runs on its own.

    python -m shared.export <method> <dest>        (what `make export-<method> DEST=<dest>` runs)

The copy holds <method>/, shared/, tests/<method>/ with the test fixtures, a requirements.txt (the
method's and shared/'s needs), the tested pins as constraints.txt, pytest settings, hubconf.py (torch.hub
entries for release folders) and INSTALL.md.
"""

import argparse
import shutil
import sys
from pathlib import Path

from shared.methods import GENESIS_FAMILY, METHODS  # noqa: F401  (METHODS: re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "method.mk")
_IGNORE_SHARED_GENESIS = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "method.mk", "genesis")

INSTALL_NOTE = """# {method}, exported

This folder was copied out of the ssl-medical monorepo by `make export-{method}`. It runs on its own:

    python3 -m venv .venv
    .venv/bin/pip install -c constraints.txt -r requirements.txt
    .venv/bin/python {method}/train.py --help
    .venv/bin/python -m pytest tests        # the method's tests

Scripts run from this folder as `python {method}/<script>.py ...` (see {method}/README.md); `shared/`
holds the building blocks the method uses. Multi-GPU: `torchrun --nproc_per_node=N {method}/train.py ...`.
"""

PYPROJECT = """[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
addopts = "--import-mode=importlib -ra"
markers = ["slow: over a minute on a small CPU", "gpu: needs CUDA"]
"""


def _requirement_lines(path):
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def export(method, dest):
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    src = REPO / method
    if not src.is_dir():
        raise SystemExit(f"{src} does not exist")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} exists and is not empty; choose a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest / method, ignore=_IGNORE)
    # shared/genesis/ is the Genesis family's engine: the other methods' copies leave it out.
    shared_ignore = _IGNORE if method in GENESIS_FAMILY else _IGNORE_SHARED_GENESIS
    shutil.copytree(REPO / "shared", dest / "shared", ignore=shared_ignore)
    (dest / "tests").mkdir()
    if (REPO / "tests" / method).is_dir():
        shutil.copytree(REPO / "tests" / method, dest / "tests" / method, ignore=_IGNORE)
    if method in GENESIS_FAMILY:
        shutil.copytree(REPO / "tests" / "shared" / "genesis", dest / "tests" / "shared" / "genesis", ignore=_IGNORE)
    shutil.copy2(REPO / "tests" / "conftest.py", dest / "tests" / "conftest.py")
    shutil.copy2(REPO / "hubconf.py", dest / "hubconf.py")  # torch.hub.load(<copy>, "<method>_backbone", ...)
    requirements = []
    for line in _requirement_lines(REPO / "shared" / "requirements.txt") + \
            _requirement_lines(src / "requirements.txt") + ["pytest"]:
        if line not in requirements:
            requirements.append(line)
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.copy2(REPO / "environments" / "constraints.txt", dest / "constraints.txt")
    (dest / "pyproject.toml").write_text(PYPROJECT)
    (dest / "INSTALL.md").write_text(INSTALL_NOTE.format(method=method))
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("method", choices=METHODS)
    parser.add_argument("dest")
    args = parser.parse_args(argv)
    dest = export(args.method, args.dest)
    print(f"exported {args.method} to {dest} (see {dest / 'INSTALL.md'})")


if __name__ == "__main__":
    sys.exit(main())
