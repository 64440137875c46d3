"""Semantic Genesis and TransVW run from one working directory, as their READMEs run them (issue 22).

Both originals write `Checkpoints/en_de/` under their own checkpoint names; everything this project adds
there (run record, metrics, resume checkpoint, TensorBoard, pictures) is named after the run, so the two
methods, or one method under two `--exp_name`, run side by side: self-discovery -> pre-training -> `--resume`
-> fine-tuning, each step of one run leaving every file of the other as it was (bytes and mtime).
"""

from contextlib import nullcontext
from pathlib import Path

import pytest

import semantic_genesis.config
import semantic_genesis.finetune_segmentation
import semantic_genesis.train
import transvw.config
import transvw.finetune_segmentation
import transvw.train
from shared.checkpoint import load_checkpoint
from shared.genesis.self_discovery.cli import (
    feature_extractor_main,
    pattern_generator_main,
    prepare_main,
    train_autoencoder_main,
)
from shared.runfolder import RunFolderClash

METHODS = {
    "semantic_genesis": (semantic_genesis.config, semantic_genesis.train, semantic_genesis.finetune_segmentation),
    "transvw": (transvw.config, transvw.train, transvw.finetune_segmentation),
}
SMALL_AE = ["--input_rows", "32", "--input_cols", "32", "--batch_size", "4", "--width", "2", "--verbose", "0",
            "--workers", "0"]
SMALL_PRETRAIN = ["--cls_classes", "2", "--nb_instances", "4", "--nb_val_instances", "2", "--nb_multires_patch", "1",
                  "--batch_size", "4", "--num_workers", "0", "--width", "2", "--n_images", "1", "--input_rows",
                  "32", "--input_cols", "32", "--input_deps", "16"]
FINETUNE = "runs/finetune_segmentation"  # fine-tuning's default --output_dir


class Run:
    """One run of a method's README steps: its method folder and its `--exp_name` (None: the default)."""

    def __init__(self, method, exp_name=None, extra=()):
        self.config, self.train, self.finetune = METHODS[method]
        self.method, self.extra = method, list(extra)
        self.stem = exp_name or self.config.EXP_NAME
        self.names = ["--exp_name", exp_name] if exp_name else []

    def self_discovery(self, sample):
        """README steps 0-3 (prepare, autoencoder, features, patterns) into the default folders."""
        prepare_main(["--input_dir", str(sample / "luna16"), "--output_dir", "dataset", "--val_fraction", "0.25",
                      "--min_shape", "32", "32", "16"])
        best = train_autoencoder_main(["--data_dir", "dataset", "--input_deps", "16", "--nb_epoch", "1", *SMALL_AE])
        feature_extractor_main(["--data_dir", "dataset", "--input_depth", "16", "--weights", str(best), *SMALL_AE])
        pattern_generator_main(["--data_dir", "dataset", "--input_rows", "32", "--input_cols", "32",
                                "--input_deps", "16", "--crop_rows", "32", "--crop_cols", "32", "--nb_instances",
                                "4", "--nb_instances_val", "2", "--nb_classes", "2", "--minPatchSize", "25",
                                "--maxPatchSize", "40", "--len_border", "8", "--len_border_z", "4", "--lung_max",
                                "0.5", "--verbose", "0", "--no_png"], default_save=self.config.PATTERN_DIR)

    def pretrain(self, *extra):
        return self.train.main(["--data_dir", self.config.PATTERN_DIR, *SMALL_PRETRAIN, *self.names, *self.extra,
                                *extra])

    def fine_tune(self, sample):
        names = ["--exp_name", f"{self.stem}_segmentation"] if self.names else []
        return self.finetune.main(["--luna16", str(sample / "luna16"), "--weights", f"Checkpoints/en_de/{self.stem}.pt",
                                   "--input_rows", "16", "--input_cols", "16", "--input_deps", "8", "--width", "2",
                                   "--nb_epoch", "1", "--batch_size", "4", *names])

    def owned(self):
        """{path: (bytes, mtime)} of every file this run owns (the self-discovery output is the method's)."""
        pretrain, finetune = Path("Checkpoints/en_de"), Path(FINETUNE)
        ft = f"{self.stem}_segmentation"
        paths = [*Path(self.config.PATTERN_DIR).rglob("*"), *pretrain.glob(f"{self.stem}.*"),
                 *(pretrain / "tensorboard" / self.stem).rglob("*"), *(pretrain / "images" / self.stem).rglob("*"),
                 *finetune.glob(f"{ft}.*"), *(finetune / "tensorboard" / ft).rglob("*")]
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(paths) if p.is_file()}


def each_leaves_the_other(runs, step):
    """Run `step(run)` for each run in turn; the other run's files must come out as they went in."""
    for run in runs:
        other = next(r for r in runs if r is not run)
        before = other.owned()
        step(run)
        assert other.owned() == before, f"{run.stem}'s step changed {other.stem}'s files"


PAIRS = {
    "both_methods": [("semantic_genesis",), ("transvw",)],
    "two_exp_names": [("semantic_genesis", "sg_lr_1e-3"), ("semantic_genesis", "sg_lr_3e-3", ["--lr", "0.003"])],
}


@pytest.mark.parametrize("pair", list(PAIRS))
def test_two_runs_side_by_side_in_one_working_directory(pair, sample_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the originals write relative to the working directory
    runs = [Run(*spec) for spec in PAIRS[pair]]
    for i, method in enumerate(dict.fromkeys(run.method for run in runs)):  # once per method: it is the method's
        # the second method retrains the shared autoencoder (same settings, as the originals): its old log is kept
        with pytest.warns(UserWarning, match="Unet_autoencoder.metrics.csv is now Unet_autoencoder.metrics.1.csv") \
                if i else nullcontext():
            next(run for run in runs if run.method == method).self_discovery(sample_data)
    each_leaves_the_other(runs, lambda run: run.pretrain("--nb_epoch", "1"))
    capsys.readouterr()

    def resume(run):
        run.pretrain("--nb_epoch", "2", "--resume")
        assert f"resumed from Checkpoints/en_de/{run.stem}.last.pt at epoch 1" in capsys.readouterr().out

    each_leaves_the_other(runs, resume)
    for run in runs:
        assert load_checkpoint(f"Checkpoints/en_de/{run.stem}.last.pt")["run"]["method"] == run.stem
        assert load_checkpoint(f"Checkpoints/en_de/{run.stem}.last.pt")["epoch"] == 2
        assert Path(f"Checkpoints/en_de/{run.stem}.pt").is_file() and any(
            Path(f"Checkpoints/en_de/tensorboard/{run.stem}").iterdir())
    each_leaves_the_other(runs, lambda run: run.fine_tune(sample_data))
    for run in runs:
        assert Path(f"{FINETUNE}/{run.stem}_segmentation.best.pt").is_file()
    # the one clash left: the same --exp_name with other settings is refused, naming them
    first = runs[0]
    before = first.owned()
    with pytest.raises(RunFolderClash, match=f"{first.stem}.run.json holds a run of '{first.stem}' with other "
                                             "settings \\(lr: 0.001 there, 0.01 now\\)"):
        first.pretrain("--nb_epoch", "3", "--resume", "--lr", "0.01")
    assert first.owned() == before
