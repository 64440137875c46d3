"""`make demo-transvw` costs no second run: one row that says it is the Semantic Genesis engine."""

import json

from transvw import demo


def test_demo_writes_the_same_engine_line_without_running(tmp_path, capsys):
    demo.main(["--runs", str(tmp_path), "--sample", str(tmp_path / "absent")])
    row = json.loads((tmp_path / "demo" / "transvw" / "row.json").read_text())
    assert row["metrics"] is None and row["wall_time_s"] == 0.0
    assert "same engine as Semantic Genesis" in row["note"] and "TransVW_chest_ct.pt" in row["note"]
    assert capsys.readouterr().out.count("\n") == 1
