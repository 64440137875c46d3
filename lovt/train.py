"""LoVT / ConVIRT / CLIP pre-training (Hydra + PyTorch Lightning).

    python lovt/train.py +experiment=LoVT_100 [dataset_path=<prepared MIMIC-CXR dataset>] [key=value ...]
    python lovt/train.py +experiment=ablation/no_spatial trainer.devices=4      # Lightning DDP
    python lovt/train.py +experiment=LoVT_100 hydra.run.dir=<run> resume=last  # continue a run
    python lovt/train.py +experiment=LoVT_100 --plan [--plan_gpu H100]          # will it fit? (lovt/plan.py)

Writes the run folder (hydra/ config, metrics.csv, tensorboard/, checkpoints/, plots/), then exports the best
checkpoint's ResNet as checkpoints/backbone_weights.pt and moves the run to <models.base_path>/pretraining/<name>.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lovt` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging
import pickle
import time
import warnings

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lovt.engine import BiModalModelRepresentationLearner
from lovt.export import finalize_run
from lovt.fast_data import FastPretrainDataModule
from lovt.models.config import model_config, register_configs
from lovt.online_eval import build_online_evaluators
from lovt.plots import plot_attention_examples
from lovt.probe import build_probe_callbacks
from shared.checkpoint import rng_state, save_atomic, set_rng_state
from shared.runfolder import set_metrics_aside, setting_differences
from shared.runlog import drop_rows_after
from shared.startup import check_shared_memory

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")
register_configs()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written through a temporary file + rename (a killed run keeps the previous one)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        """Always weights_only=True: a checkpoint holding a pickled program is refused, never run."""
        return read_checkpoint_safely(path, map_location)


def read_checkpoint_safely(path, map_location=None):
    """torch.load(weights_only=True) of a Lightning checkpoint; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(f"{path}: refused, it holds more than tensors and plain values (a pickled object "
                           f"that would run code when loaded): {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise RuntimeError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                           f"{str(e).splitlines()[0]}") from None


# pretrain_model settings that may change when a run is resumed (its length); every other one must match
RESUME_MAY_CHANGE = {"max_epochs"}


def check_resume_matches(checkpoint, module, path):
    """Refuse to continue a checkpoint written with another pretrain_model configuration."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not isinstance(saved, dict):
        return  # not one of ours (e.g. the original's): Lightning's strict state-dict load decides
    diffs = setting_differences(saved, module.hparams["config"], RESUME_MAY_CHANGE,
                                name=lambda k: f"pretrain_model.{k}")
    if diffs:
        shown = "; ".join(diffs[:5])
        raise SystemExit(f"resume refused: {path} was written by another configuration ({shown}). Resume with "
                         "the same experiment and overrides, or start a new run in another hydra.run.dir.")


def prepare_run_folder(run_dir, resume_step):
    """Keep the run folder's earlier logs and checkpoints safe. Resuming: drop the metrics rows logged at or
    after the checkpoint's step (they are logged again). A fresh run: refuse a folder holding checkpoints of
    an earlier run, and move an earlier metrics.csv aside (metrics.<n>.csv) instead of mixing or deleting it."""
    metrics = Path(run_dir) / "metrics.csv"
    if resume_step is not None:
        dropped = drop_rows_after(metrics, resume_step - 1)
        if dropped:
            log.info("dropped %d metrics rows logged after the checkpoint (they are logged again)", dropped)
        return
    old = sorted((Path(run_dir) / "checkpoints").glob("*.ckpt"))
    if old:
        raise SystemExit(f"{run_dir} already holds checkpoints of an earlier run ({old[0].name}): continue it "
                         "with resume=last, or choose another hydra.run.dir")
    set_metrics_aside(run_dir)


class RngStateCallback(Callback):
    """Puts the python/numpy/torch RNG states into every checkpoint so that a resumed run draws the same
    augmentations, dropout masks and shuffles as an uninterrupted one."""

    def state_dict(self):
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict):
        if "rng" in state_dict:
            set_rng_state(state_dict["rng"])


class FlushLogsCallback(Callback):
    """Write the loggers' buffered rows whenever a checkpoint is saved, so a run killed later keeps every row
    up to its last checkpoint (Lightning's CSV logger otherwise writes every 100 steps only)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        for lg in trainer.loggers:
            lg.save()


class StepTimingCallback(Callback):
    """Logs data_wait_s and step_s per training batch (the columns of shared.timing, read by tools/gpu_check.py).
    Lightning fetches the next batch between one batch's end hook and the next one's start hook, so that gap is
    the time blocked in the loader's next(); step_s runs from one batch's end to the next. With gradient
    accumulation Lightning writes one row per optimizer step (per accumulate_grad_batches batches): the values
    logged are then the per-batch means over those batches, not the last batch's alone (which holds the
    optimizer step)."""

    def on_train_epoch_start(self, trainer, pl_module):
        self._end = None
        self._sums, self._n = {"data_wait_s": 0.0, "step_s": 0.0}, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now, end = time.perf_counter(), self._end
        self._end = now
        window_ends = ((batch_idx + 1) % max(1, trainer.accumulate_grad_batches) == 0
                       or batch_idx + 1 == trainer.num_training_batches)
        if end is not None:  # the epoch's first batch has no previous end to measure from
            self._sums["data_wait_s"] += self._start - end
            self._sums["step_s"] += now - end
            self._n += 1
        if self._n:
            timing = {k: v / self._n for k, v in self._sums.items()}
            if pl_module.device.type == "cuda":
                timing["peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
                timing["peak_reserved_gib"] = torch.cuda.max_memory_reserved(pl_module.device) / 2**30
            for key, value in timing.items():
                pl_module.log(key, value, on_step=True, on_epoch=False, batch_size=batch["scan"].shape[0])
        if window_ends:
            self._sums, self._n = {"data_wait_s": 0.0, "step_s": 0.0}, 0


class AttentionPlotCallback(Callback):
    """After every validation epoch: each sentence's attention over the image regions for a few studies (PNG)."""

    def __init__(self, out_dir, max_examples: int = 4):
        self.out_dir, self.max_examples = Path(out_dir), max_examples

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero or not pl_module.attention_examples:
            return
        plot_attention_examples(pl_module.attention_examples[: self.max_examples], self.out_dir,
                                trainer.current_epoch)


def trainer_kwargs(cfg: DictConfig, has_global_loss: bool = True) -> dict:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if not has_global_loss and kwargs.get("strategy") in ("ddp", "auto") and (
            kwargs.get("devices") not in (1, "1", [0]) or kwargs.get("num_nodes", 1) > 1):
        kwargs["strategy"] = "ddp_find_unused_parameters_true"  # the global heads get no gradient (no_g)
    cuda = torch.cuda.is_available() and kwargs.get("accelerator", "auto") in ("auto", "gpu", "cuda")
    if not cuda and str(kwargs.get("precision")) in ("16", "16-mixed"):
        warnings.warn("fp16 mixed precision needs CUDA: training in 32-true on this machine", stacklevel=2)
        kwargs["precision"] = "32-true"
    if cfg.debug:
        kwargs.update(fast_dev_run=True, accelerator="cpu", devices=1, precision="32-true")
    return kwargs


def run_training(cfg: DictConfig, run_dir, datasets=None) -> dict:
    """Build everything from the composed config, fit, export. Returns paths and the best score.

    datasets: optional {"train", "validation"} datasets used instead of `pretrain_dataset` (tests, benchmarks).
    """
    run_dir = Path(run_dir)
    if cfg.print_config:
        log.info("config:\n%s", OmegaConf.to_yaml(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    pretrain_cfg = model_config(cfg.pretrain_model)
    base = cfg.models.base_path
    target = Path(base) / cfg.models.pretrained_models_folder / cfg.name if base and cfg.export_run else None
    if target is not None and target.exists() and target.resolve() != run_dir.resolve() and not cfg.debug:
        raise FileExistsError(f"{target} already exists: choose another name=... or remove it before training")

    perf = cfg.get("performance") or {}
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = bool(perf.get("cudnn_benchmark", False))
        torch.set_float32_matmul_precision(perf.get("matmul_precision", "highest"))
    num_workers = 0 if cfg.debug else cfg.num_dataloader_workers
    side = pretrain_cfg.encoder_a.input_size  # scans as float32 RGB (upper bound: the cache path holds uint8)
    check_shared_memory(num_workers, pretrain_cfg.batch_size * 3 * 4 * int(side[0]) * int(side[-1]),
                        "num_dataloader_workers=")
    module = BiModalModelRepresentationLearner(cfg.pretrain_model, dataset=cfg.pretrain_dataset,
                                               num_workers=num_workers, models_base_path=base)
    if torch.cuda.is_available() and perf.get("channels_last", False):
        module.model.model_a.encoder.use_channels_last()
    data = FastPretrainDataModule(datasets or cfg.pretrain_dataset, pretrain_cfg, num_workers=num_workers,
                                  dataset_path=cfg.dataset_path, data_path=cfg.get("data_path", "files"),
                                  augment_on=cfg.get("augment_on", "auto"), cache_size=cfg.get("cache_size", 256))

    callbacks, checkpoint_cb = [RngStateCallback(), FlushLogsCallback(), StepTimingCallback()], None
    for key, node in (cfg.get("callback") or {}).items():
        if key == "model_checkpoint":
            checkpoint_cb = instantiate(node, dirpath=str(run_dir / node.dirpath))
            callbacks.append(checkpoint_cb)
        else:
            callbacks.append(instantiate(node))
    callbacks += build_online_evaluators(cfg.get("online_eval"))
    callbacks += build_probe_callbacks(cfg)  # the frozen-feature probe (probe_every > 0)
    if cfg.attention_plots:
        callbacks.append(AttentionPlotCallback(run_dir / "plots", cfg.attention_plots))
    resume = cfg.resume
    if resume == "last":
        resume = str(run_dir / "checkpoints" / "last.ckpt")
    resume_step = None
    if resume:  # read (weights only) and checked before anything is written into the run folder
        checkpoint = read_checkpoint_safely(resume)
        check_resume_matches(checkpoint, module, resume)
        resume_step = int(checkpoint.get("global_step", 0))
        del checkpoint
    if not cfg.debug:
        prepare_run_folder(run_dir, resume_step)
    loggers = [instantiate(node, save_dir=str(run_dir)) for node in (cfg.get("logger") or {}).values()]

    kwargs = trainer_kwargs(cfg, has_global_loss=pretrain_cfg.g_alignment is not None)
    trainer = pl.Trainer(**kwargs, max_epochs=pretrain_cfg.max_epochs, callbacks=callbacks, logger=loggers,
                         default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()])
    for lg in loggers:
        lg.log_hyperparams({"name": cfg.name, "pretrain_dataset": cfg.pretrain_dataset,
                            "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
                            "total_params": sum(p.numel() for p in module.parameters())})
    trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)

    result = {"run_dir": str(run_dir), "trainer": trainer, "module": module}
    if checkpoint_cb is not None:
        score = checkpoint_cb.best_model_score
        result["best_score"] = None if score is None else float(score)
        result["best_model_path"] = checkpoint_cb.best_model_path
    if trainer.is_global_zero and checkpoint_cb is not None and not cfg.debug:
        best = checkpoint_cb.best_model_path or checkpoint_cb.last_model_path
        best_epoch = None
        if best and "epoch=" in Path(best).name:
            best_epoch = int(Path(best).stem.split("epoch=")[1])
        final = finalize_run(run_dir, cfg.name, best or None, result.get("best_score"), best_epoch,
                             models_base_path=base if cfg.export_run else None,
                             pretrained_models_folder=cfg.models.pretrained_models_folder)
        result["run_dir"] = str(final)
        log.info("run folder: %s", final)
    return result


@hydra.main(version_base="1.3", config_path="configs", config_name="train_representation")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    run_training(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one line per warning, no source line
    if "--plan" in sys.argv[1:]:  # the planner's flags are not Hydra overrides: lovt/plan.py reads them
        from lovt.plan import main as plan_main

        plan_main(sys.argv[1:])
    else:
        main()
