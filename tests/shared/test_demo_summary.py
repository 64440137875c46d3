"""The demo table's row logic (means, t-intervals, the paired difference and its verdict) from a fake run,
and the bar chart."""

import json

import pytest

from shared.demo import compare, metric, read_rows, t_interval, write_row, write_summary

T_975_2DF = 4.302653  # Student t, 97.5 % quantile, 2 degrees of freedom


def test_t_interval_of_three_values_by_hand():
    mean, low, high = t_interval([0.1, 0.2, 0.3])
    half = T_975_2DF * 0.1 / 3 ** 0.5
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2 - half, abs=1e-6)
    assert high == pytest.approx(0.2 + half, abs=1e-6)
    assert t_interval([0.7]) == (0.7, 0.7, 0.7)


def test_paired_difference_decides_the_verdict():
    # differences 0.2, 0.3, 0.4: interval 0.3 +- 0.248 lies above zero
    gain = compare([0.7, 0.8, 0.9], [0.5, 0.5, 0.5])
    assert gain["verdict"] == "gain" and gain["excludes_zero"]
    assert gain["difference"][1] == pytest.approx(0.3 - T_975_2DF * 0.1 / 3 ** 0.5, abs=1e-6)
    # differences 0.1, 0.2, 0.3: the interval reaches below zero although every seed is ahead
    unsure = compare([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert unsure["verdict"] == "no" and not unsure["excludes_zero"]
    # pairing matters: a large seed-to-seed spread that both models share still gives a clear gain
    paired = compare([0.11, 0.51, 0.91], [0.1, 0.5, 0.9])
    assert paired["verdict"] == "gain" and paired["random"][2] - paired["random"][1] > 0.5
    assert compare([0.5, 0.5, 0.4], [0.6, 0.7, 0.6])["verdict"] == "loss"
    assert compare([0.9], [0.1])["verdict"] == "no"  # one seed: no interval, no claim
    with pytest.raises(ValueError, match="paired by seed"):
        compare([0.1, 0.2], [0.1])


def test_fake_run_makes_the_table_and_the_chart(tmp_path):
    runs = tmp_path / "runs"
    write_row("m1", runs=runs, data="sample CT", steps=20, final_loss=0.5, wall_time_s=12.3, metrics=[
        metric("probe", "k-NN AUROC", [0, 1, 2], [0.7, 0.8, 0.9], [0.5, 0.5, 0.5]),
        metric("fine-tune", "Dice", [0, 1, 2], [0.6, 0.7, 0.8], [0.5, 0.5, 0.5])])
    write_row("m2", runs=runs, data="same engine", note="see m1", wall_time_s=0.0)
    with pytest.raises(ValueError, match="unknown demo row fields"):
        write_row("m3", runs=runs, colour="red")
    with pytest.raises(ValueError, match="3 seeds but 2"):
        metric("probe", "AUROC", [0, 1, 2], [0.1, 0.2], [0.1, 0.2, 0.3])
    text = write_summary(runs)
    lines = [line for line in text.splitlines() if line.startswith("| m1")]
    assert len(lines) == 2
    assert "probe: k-NN AUROC | 3 | 0.800 [0.552, 1.048] | 0.500 [0.500, 0.500] | 0.300 [0.052, 0.548] | **yes**" \
        in lines[0]
    assert "fine-tune: Dice" in lines[1] and "no (CI holds 0)" in lines[1]
    assert any(line.startswith("| m2 |") and "see m1" in line for line in text.splitlines())
    png = runs / "demo" / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(summary.png)" in text
    assert (runs / "demo" / "summary.md").read_text() == text
    assert [r["method"] for r in read_rows(runs)] == ["m1", "m2"]
    assert json.loads((runs / "demo" / "m1" / "row.json").read_text())["metrics"][0]["seeds"] == [0, 1, 2]


def test_probe_over_seeds_finds_the_planted_signal_only_in_the_loaded_encoder():
    import numpy as np
    import torch

    from shared.demo import probe_over_seeds
    from shared.probe import ProbeSet

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = rng.normal(0, 3, (80, 8)).astype(np.float32)
    x[:, 0] = (y * 2 - 1) + rng.normal(0, 0.3, 80)  # the label lives in channel 0 only

    def build():
        return torch.nn.Linear(8, 1)

    def load(net):  # "pre-training" found channel 0
        with torch.no_grad():
            net.weight.zero_()
            net.weight[0, 0] = 1.0
            net.bias.zero_()
    probe_set = ProbeSet.from_labelled(torch.from_numpy(x), y, 0.3, 0)
    found = probe_over_seeds(probe_set, build, load, [0, 1, 2])
    assert all(v > 0.95 for v in found["pretrained"])
    assert np.mean(found["random"]) < np.mean(found["pretrained"]) - 0.2
    assert len(set(found["random"])) > 1 and [a["seed"] for a in found["all"]] == [0, 1, 2]
    assert found == probe_over_seeds(probe_set, build, load, [0, 1, 2])  # seeded: the same again
