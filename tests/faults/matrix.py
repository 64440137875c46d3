"""The fault matrix (method x fault -> documented outcome), read from the fault-suite modules.

    python -m tests.faults.matrix          # prints the markdown table README.md carries

Each module of tests/faults/ defines OUTCOMES (fault id -> the documented outcome, each with a test
named test_<fault_id>...) and NOT_APPLICABLE (fault id -> why not). The modules are read as text (their
OUTCOMES / NOT_APPLICABLE are literals), so printing the table imports no method.
"""

import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent

FAULTS = ("kill_resume", "kill_during_save", "corrupt_file", "missing_file", "empty_data", "wrong_label_shape",
          "nonfinite_input", "wrong_ndim", "run_folder_clash", "nonfinite_loss", "wrong_checkpoint")
ROWS = {  # matrix row -> the module that tests it
    "semantic_genesis": "test_genesis.py",
    "transvw": "test_genesis.py",
    "dira": "test_dira.py",
    "voco": "test_voco.py",
    "lovt": "test_lovt.py",
    "lovt_eval": "test_lovt_eval.py",
}
MODULES = sorted(set(ROWS.values()) | {"test_shared.py"})
MAX_CELL = 140


def read_module(name):
    """{'OUTCOMES': {...}, 'NOT_APPLICABLE': {...}, 'tests': [test function names]}, or None when absent."""
    path = HERE / name
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text())
    found = {"OUTCOMES": None, "NOT_APPLICABLE": None, "tests": []}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("OUTCOMES", "NOT_APPLICABLE"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            found["tests"].append(node.name)
    return found


def cell(text, limit=MAX_CELL):
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def table():
    """The markdown table: one row per method, one column per fault id."""
    lines = ["| method | " + " | ".join(f"`{f}`" for f in FAULTS) + " |",
             "|---|" + "---|" * len(FAULTS)]
    for row, module in ROWS.items():
        spec = read_module(module)
        cells = []
        for fault in FAULTS:
            if spec is None:
                cells.append("pending")
            elif fault in (spec["OUTCOMES"] or {}):
                cells.append(cell(spec["OUTCOMES"][fault]))
            elif fault in (spec["NOT_APPLICABLE"] or {}):
                cells.append(cell("n/a: " + spec["NOT_APPLICABLE"][fault]))
            else:
                cells.append("UNDOCUMENTED")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(), end="")
