"""The demo table's row logic from constructed scores: t-intervals (plain and Nadeau-Bengio corrected), the
paired difference, the four verdicts, grouped folds, the probe with its baselines, and the written summary."""

import json
import math

import pytest

from shared.demo import (
    VERDICT_RULE,
    compare,
    grouped_folds,
    metric,
    read_rows,
    short_budget,
    t_interval,
    verdict,
    write_row,
    write_summary,
)

T_975_2DF = 4.302653  # Student t, 97.5 % quantile, 2 degrees of freedom
T_975_3DF = 3.182446  # 3 degrees of freedom


def test_t_interval_of_three_values_by_hand():
    mean, low, high = t_interval([0.1, 0.2, 0.3])
    half = T_975_2DF * 0.1 / 3 ** 0.5
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2 - half, abs=1e-6)
    assert high == pytest.approx(0.2 + half, abs=1e-6)
    assert t_interval([0.7]) == (0.7, 0.7, 0.7)


def test_corrected_resampled_interval_by_hand():
    # four fold scores 0.1..0.4: mean 0.25, s^2 = 0.05/3; 4-fold so n_test/n_train = 1/3
    values, ratio = [0.1, 0.2, 0.3, 0.4], 1 / 3
    s2 = 0.05 / 3
    half = T_975_3DF * math.sqrt((1 / 4 + ratio) * s2)  # Nadeau-Bengio: (1/J + n2/n1) s^2
    mean, low, high = t_interval(values, test_train_ratio=ratio)
    assert mean == pytest.approx(0.25) and (low, high) == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)
    plain = t_interval(values)
    assert high - low == pytest.approx((plain[2] - plain[1]) * math.sqrt((1 / 4 + ratio) / (1 / 4)), abs=1e-9)


def test_paired_difference():
    # differences 0.2, 0.3, 0.4: interval 0.3 +- 0.248 lies above zero
    up = compare([0.7, 0.8, 0.9], [0.5, 0.5, 0.5])
    assert up["above"] and up["excludes_zero"] and not up["below"]
    assert up["difference"][1] == pytest.approx(0.3 - T_975_2DF * 0.1 / 3 ** 0.5, abs=1e-6)
    # differences 0.1, 0.2, 0.3: the interval reaches below zero although every seed is ahead
    assert not compare([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])["excludes_zero"]
    # pairing matters: a large seed-to-seed spread that both models share still gives a clear difference
    assert compare([0.11, 0.51, 0.91], [0.1, 0.5, 0.9])["above"]
    assert compare([0.5, 0.5, 0.4], [0.6, 0.7, 0.6])["below"]
    assert not compare([0.9], [0.1])["excludes_zero"]  # one seed: no interval, no claim
    with pytest.raises(ValueError, match="paired by seed"):
        compare([0.1, 0.2], [0.1])


SEEDS = [0, 1, 2]


def test_verdict_gain_needs_random_init_and_both_baselines_beaten():
    row = metric("probe", "AUROC", SEEDS, [0.90, 0.92, 0.91], [0.70, 0.71, 0.69], trivial=0.5, raw=[0.6, 0.62, 0.61])
    assert verdict(row) == "gain"
    # the same arms, but raw inputs do as well as pre-training (the VoCo probe of the audit): neither arm
    # beats them, so the task cannot tell
    as_raw = metric("probe", "AUROC", SEEDS, [0.90, 0.92, 0.91], [0.70, 0.71, 0.69], trivial=0.5,
                    raw=[0.91, 0.92, 0.90])
    assert verdict(as_raw) == "uninformative"
    # both arms beat the baselines but not each other: no gain
    level = metric("probe", "AUROC", SEEDS, [0.90, 0.92, 0.91], [0.91, 0.90, 0.92], trivial=0.5,
                   raw=[0.6, 0.62, 0.61])
    assert verdict(level) == "no gain"
    # without baselines nothing can be claimed
    assert verdict(metric("probe", "AUROC", SEEDS, [0.90, 0.92, 0.91], [0.70, 0.71, 0.69])) == "no gain"


def test_verdict_uninformative_when_neither_arm_beats_the_baselines():
    # the Semantic Genesis fine-tuning of the audit: both arms below predicting nothing
    below_trivial = metric("fine-tune", "Dice", SEEDS, [0.134, 0.216, 0.140], [0.098, 0.033, 0.139],
                           trivial=[0.478, 0.381, 0.369], raw=[0.2, 0.2, 0.2])
    assert verdict(below_trivial) == "uninformative"
    # the LoVT segmentation of the audit: pre-trained ahead of random on every seed, but a Dice of 0.01
    # that pooled raw pixels beat; the old table printed "yes" here
    tiny = metric("fine-tune", "Dice", SEEDS, [0.009, 0.011, 0.010], [0.001, 0.002, 0.002], trivial=0.0,
                  raw=[0.05, 0.06, 0.055])
    assert compare(tiny["pretrained"], tiny["random"])["above"] and verdict(tiny) == "uninformative"
    # a probe at chance
    assert verdict(metric("probe", "AUROC", SEEDS, [0.45, 0.5, 0.48], [0.52, 0.47, 0.5], trivial=0.5,
                          raw=[0.5, 0.5, 0.5])) == "uninformative"


def test_verdict_faster_start_is_a_gain_at_the_short_budget_only():
    # the DiRA fine-tuning of the audit: ahead after 3 epochs, random init ahead after 10
    short = short_budget("3 epochs", [0.87, 0.88, 0.86], [0.62, 0.60, 0.64], trivial=0.0, raw=[0.5, 0.5, 0.5])
    row = metric("fine-tune", "lung Dice, 10 epochs", SEEDS, [0.974, 0.975, 0.973], [0.979, 0.980, 0.978],
                 trivial=0.0, raw=[0.5, 0.5, 0.5], short=short)
    assert verdict(row) == "faster start"
    # ahead at both budgets: a gain
    both = metric("fine-tune", "Dice", SEEDS, [0.99, 0.99, 0.99], [0.979, 0.980, 0.978], trivial=0.0,
                  raw=[0.5, 0.5, 0.5], short=short)
    assert verdict(both) == "gain"
    # no short budget: no gain
    assert verdict({k: v for k, v in row.items() if k != "short"}) == "no gain"


def test_lower_is_better_and_pretext_rows():
    error = metric("pretext", "restoration MSE", SEEDS, [0.010, 0.012, 0.011], [0.050, 0.055, 0.052],
                   lower_is_better=True)
    assert verdict(error) == "gain"
    assert verdict({**error, "lower_is_better": False}) == "no gain"
    fp = metric("fine-tune", "false-positive rate", SEEDS, [0.05, 0.06, 0.04], [0.3, 0.32, 0.31],
                lower_is_better=True, trivial=0.0, raw=[0.4, 0.42, 0.41])
    assert verdict(fp) == "uninformative"  # predicting nothing has no false positives: the trivial arm wins
    errors = metric("fine-tune", "error rate", SEEDS, [0.10, 0.11, 0.09], [0.20, 0.22, 0.21], lower_is_better=True,
                    trivial=0.4, raw=[0.30, 0.31, 0.29])
    assert verdict(errors) == "gain"


def test_grouped_folds_keep_each_group_on_one_side():
    groups = [g for g in "aabbccddeeffgghh"]
    folds = grouped_folds(groups, k=4, repeats=3, seed=0)
    assert len(folds) == 12
    for r in range(3):
        tested = sorted(i for rr, _, _, test in folds if rr == r for i in test)
        assert tested == list(range(16))  # each sample tested once per repetition
    for _, _, train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert [list(f[3]) for f in folds[:4]] != [list(f[3]) for f in folds[4:8]]  # repetitions reshuffle
    with pytest.raises(ValueError, match="at least 4 groups"):
        grouped_folds(list("aabb"), k=4)


def test_fake_run_makes_the_tables_the_rule_and_the_chart(tmp_path):
    runs = tmp_path / "runs"
    write_row("m1", runs=runs, data="sample CT", steps=20, final_loss=0.5, wall_time_s=12.3,
              seen="3 of 8 probe cases", metrics=[
                  metric("pretext", "restoration MSE", [0, 1, 2], [0.1, 0.11, 0.12], [0.3, 0.3, 0.31],
                         lower_is_better=True),
                  metric("probe", "k-NN AUROC", [0, 1, 2], [0.7, 0.8, 0.9], [0.5, 0.5, 0.5], trivial=0.5,
                         raw=[0.5, 0.5, 0.5]),
                  metric("fine-tune", "Dice", [0, 1, 2], [0.6, 0.7, 0.8], [0.5, 0.5, 0.5], trivial=0.0,
                         raw=[0.1, 0.1, 0.1])])
    write_row("m2", runs=runs, data="same engine", note="see m1", wall_time_s=0.0)
    with pytest.raises(ValueError, match="unknown demo row fields"):
        write_row("m3", runs=runs, colour="red")
    with pytest.raises(ValueError, match="3 seeds but 2"):
        metric("probe", "AUROC", [0, 1, 2], [0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 seeds but 2 raw"):
        metric("probe", "AUROC", [0, 1, 2], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], raw=[0.5, 0.5])
    text = write_summary(runs)
    lines = [line for line in text.splitlines() if line.startswith("| m1 |")]
    assert len(lines) == 4  # three metrics and the facts line
    assert "restoration MSE (lower is better) | 3 seeds |" in lines[0] and lines[0].endswith("**gain** |")
    assert ("probe: k-NN AUROC | 3 seeds | 0.800 [0.552, 1.048] | 0.500 [0.500, 0.500] | 0.300 [0.052, 0.548] "
            "| 0.500 | 0.500 | **gain** |") in lines[1]
    assert "fine-tune: Dice" in lines[2] and lines[2].endswith("**no gain** |")
    assert "| 3 of 8 probe cases | 12.3 |" in lines[3]
    assert VERDICT_RULE in text and "yes" not in text.split("## Runs")[0]  # verdicts, not a bare "yes"
    assert any(line.startswith("| m2 |") and "see m1" in line for line in text.splitlines())
    png = runs / "demo" / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(summary.png)" in text
    assert (runs / "demo" / "summary.md").read_text() == text
    assert [r["method"] for r in read_rows(runs)] == ["m1", "m2"]
    assert json.loads((runs / "demo" / "m1" / "row.json").read_text())["metrics"][1]["raw"] == [0.5] * 3


def test_fake_run_prints_a_short_budget_and_corrected_folds(tmp_path):
    short = short_budget("3 epochs", [0.87, 0.88, 0.86], [0.62, 0.60, 0.64], trivial=0.0, raw=[0.5, 0.5, 0.5])
    write_row("m1", runs=tmp_path, metrics=[
        metric("fine-tune", "Dice, 10 epochs", [0, 1, 2], [0.97, 0.975, 0.973], [0.979, 0.98, 0.978],
               trivial=0.0, raw=[0.5, 0.5, 0.5], short=short),
        metric("probe", "AUROC", ["r0f0", "r0f1", "r1f0", "r1f1"], [0.9, 0.8, 0.85, 0.9], [0.6, 0.7, 0.6, 0.65],
               trivial=0.5, raw=[0.6, 0.6, 0.6, 0.6], test_train_ratio=1.0)])
    text = write_summary(tmp_path)
    assert "| m1 | ... at the shorter budget, 3 epochs | 3 seeds |" in text and "**faster start**" in text
    assert "4 folds (corrected, n_test/n_train 1.00)" in text


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
    probe_set = ProbeSet.from_labelled(torch.from_numpy(x)[:, :, None], y, 0.3, 0)  # (N, C, 1): one "pixel"
    found = probe_over_seeds(probe_set, lambda: torch.nn.Sequential(torch.nn.Flatten(), build()),
                             lambda net: load(net[1]), [0, 1, 2], raw_pool=1)
    assert all(v > 0.95 for v in found["pretrained"])
    assert np.mean(found["random"]) < np.mean(found["pretrained"]) - 0.2
    assert len(set(found["random"])) > 1 and found["seeds"] == [0, 1, 2] and found["test_train_ratio"] is None
    assert found["trivial"] == [0.5] * 3 and all(v > 0.9 for v in found["raw"])  # the raw inputs hold it too
    again = probe_over_seeds(probe_set, lambda: torch.nn.Sequential(torch.nn.Flatten(), build()),
                             lambda net: load(net[1]), [0, 1, 2], raw_pool=1)
    assert found == again  # seeded: the same again
    # repeated grouped K-fold: 4 samples per group, 5 folds x 2 repetitions, the corrected ratio returned
    groups = np.concatenate([probe_set.train_y * 0 + np.arange(len(probe_set.train_y)) // 4,
                             1000 + np.arange(len(probe_set.test_y)) // 4])
    folds = probe_over_seeds(probe_set, lambda: torch.nn.Sequential(torch.nn.Flatten(), build()),
                             lambda net: load(net[1]), [0], raw_pool=1, groups=groups, folds=5, repeats=2)
    assert folds["seeds"][:2] == ["r0f0", "r0f1"] and len(folds["seeds"]) == 10
    assert folds["test_train_ratio"] == pytest.approx(0.25, abs=0.05)
    assert all(v > 0.95 for v in folds["pretrained"])
    # raw_fn replaces the pooled raw inputs: a raw baseline that sees only noise channels scores near chance
    noise_only = probe_over_seeds(probe_set, lambda: torch.nn.Sequential(torch.nn.Flatten(), build()),
                                  lambda net: load(net[1]), [0, 1, 2], raw_pool=1,
                                  raw_fn=lambda inputs: inputs[:, 1:, 0].numpy())
    assert np.mean(noise_only["raw"]) < 0.75 and noise_only["pretrained"] == found["pretrained"]


def test_runs_table_states_the_pretraining_seeds(tmp_path):
    from shared.demo import ONE_PRETRAINING

    scores = [metric("pretext", "MSE", [0, 1], [0.1, 0.2], [0.3, 0.4], lower_is_better=True)]
    write_row("one", runs=tmp_path, data="d", wall_time_s=1.0, metrics=scores)
    write_row("three", runs=tmp_path, data="d", wall_time_s=1.0, metrics=scores, pretrain_seeds="3 (0, 1, 2)")
    write_row("none", runs=tmp_path, data="same engine", wall_time_s=0.0)  # runs nothing: no pre-training
    text = write_summary(tmp_path)
    runs = text.split("## Runs")[1]
    assert "| pre-training seeds |" in runs
    assert f"| {ONE_PRETRAINING} |" in next(line for line in runs.splitlines() if line.startswith("| one |"))
    assert "| 3 (0, 1, 2) |" in next(line for line in runs.splitlines() if line.startswith("| three |"))
    assert ONE_PRETRAINING not in next(line for line in runs.splitlines() if line.startswith("| none |"))
    assert "spread between pre-training seeds is not in the intervals" in text


def test_raw_segmentation_finds_a_bright_blob_from_raw_values_alone():
    import numpy as np

    from shared.demo import local_mean_features, raw_segmentation

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.1, (6, 16, 16)).astype(np.float32)
    y = np.zeros_like(x)
    for i in range(6):  # a bright 4x4 square at a different place in each image
        r, c = 2 + 2 * i, 10 - i
        x[i, r:r + 4, c:c + 4] += 1.0
        y[i, r:r + 4, c:c + 4] = 1
    features = local_mean_features(x[:1])
    assert features.shape == (256, 3) and features[0, 0] == x[0, 0, 0]  # the raw value first, pixel order

    def dice(pred, target):
        return 2 * (pred & (target > 0)).sum() / (pred.sum() + (target > 0).sum())
    pred = raw_segmentation(x[:4], y[:4], x[4:], dice, seed=0)
    assert pred.shape == (2, 16, 16) and dice(pred, y[4:]) > 0.8
    with pytest.raises(ValueError, match="both foreground and background"):
        raw_segmentation(x[:2], np.zeros_like(x[:2]), x[2:], dice)
