"""The fault matrix cannot rot: every documented outcome has its test, every fault id is accounted for,
and README.md carries exactly the table `python -m tests.faults.matrix` prints."""

import importlib.util
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
spec = importlib.util.spec_from_file_location("fault_matrix", HERE / "matrix.py")
matrix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(matrix)

PRESENT = [m for m in matrix.MODULES if (HERE / m).is_file()]


@pytest.mark.parametrize("module", PRESENT)
def test_every_documented_outcome_has_a_test(module):
    found = matrix.read_module(module)
    assert isinstance(found["OUTCOMES"], dict) and isinstance(found["NOT_APPLICABLE"], dict), module
    for fault in found["OUTCOMES"]:
        assert any(name.startswith(f"test_{fault}") for name in found["tests"]), f"{module}: no test_{fault}..."


@pytest.mark.parametrize("module", PRESENT)
def test_every_fault_id_is_an_outcome_or_not_applicable(module):
    found = matrix.read_module(module)
    outcomes, not_applicable = set(found["OUTCOMES"]), set(found["NOT_APPLICABLE"])
    assert outcomes | not_applicable == set(matrix.FAULTS), module
    assert not outcomes & not_applicable, module


def test_readme_carries_the_generated_table():
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- fault-matrix:start -->\n(.*?)<!-- fault-matrix:end -->", text, re.S)
    assert found, "README.md has no fault-matrix section"
    assert found.group(1) == matrix.table(), "README.md's fault matrix is stale: run python -m tests.faults.matrix"


def test_the_table_has_every_row_and_column():
    lines = matrix.table().splitlines()
    assert len(lines) == 2 + len(matrix.ROWS)
    assert all(line.count("|") == len(matrix.FAULTS) + 2 for line in lines)
    absent = [row for row, module in matrix.ROWS.items() if not (HERE / module).is_file()]
    for line, row in zip(lines[2:], matrix.ROWS):
        assert line.startswith(f"| {row} |")
        assert ("pending" in line) == (row in absent) and "UNDOCUMENTED" not in line
