"""The Lightning module of LoVT / ConVIRT / CLIP pre-training: steps, logging, optimizer and LR schedule."""
import math

import pytorch_lightning as pl
import torch

from lovt.models import BiModalModel
from lovt.models.config import config_to_dict, model_config
from shared.checkpoint import fault_kill_at_step
from shared.guards import LossWatch, inject_nan


def cosine_factor(mode: str, steps_per_epoch: int, total_steps: int):
    """LR factor of 'cosine_annealing_per_epoch' at optimizer step t.

    periodic (original): torch's CosineAnnealingLR(T_max=steps_per_epoch) is not restarted, so past T_max it rises
                         again: 0.5 (1 + cos(pi t / T)), period 2 epochs (1, .85, .5, .15, 0, .15, ... for T=4)
    restart:             the cosine starts again at every epoch (what the name suggests)
    once:                one cosine from the base LR to 0 over the whole run
    """
    T = max(1, steps_per_epoch)
    if mode == "periodic":
        return lambda t: 0.5 * (1 + math.cos(math.pi * t / T))
    if mode == "restart":
        return lambda t: 0.5 * (1 + math.cos(math.pi * (t % T) / T))
    if mode == "once":
        return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / max(1, total_steps)))
    raise ValueError(f"cosine_annealing_mode must be periodic, restart or once; got {mode!r}")


def warmup_cosine_factor(warmup_steps: int, total_steps: int):
    """Linear warm-up from lr/100 to lr, then a cosine to 0 (the pl_bolts schedule, stepped per optimizer step)."""
    def factor(t):
        if t < warmup_steps:
            return 0.01 + 0.99 * t / max(1, warmup_steps)
        progress = (t - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class BiModalModelRepresentationLearner(pl.LightningModule):
    """Image-report representation learner (the original's class name).

    config: the `pretrain_model` node (dict / DictConfig / BiModalModelConfig); hyper-parameters are stored as plain
    python so checkpoints load with weights_only=True. `models_base_path` resolves `baseline:<name>` backbones.
    """

    def __init__(self, config, dataset: str | None = None, num_workers: int = 0,
                 models_base_path: str | None = None):
        super().__init__()
        cfg = model_config(config)
        self.save_hyperparameters({"config": config_to_dict(cfg), "dataset": dataset, "num_workers": num_workers})
        self.config = cfg
        self.model = BiModalModel(cfg, models_base_path)
        if cfg.load_checkpoint_path:
            self._warm_start(cfg.load_checkpoint_path, cfg.component_loaded_from_checkpoint)
        self.attention_examples = []  # (scan, sentences, probs) of a few validation studies, for plots
        self.loss_watch = None  # made when training starts (device and precision known)

    def _warm_start(self, path, components):
        """Initialise the named components (model_a, model_b, ll_attention) from a pre-training checkpoint
        (ours: keys model.<component>.*, or the original's: <component>.*)."""
        from shared.weights import extract_state_dict, read_checkpoint

        state = extract_state_dict(read_checkpoint(path), wrapper="state_dict")
        for component in components:
            module = getattr(self.model, component)
            for prefix in (f"model.{component}.", f"{component}."):
                sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                if sub:
                    try:
                        module.load_state_dict(sub, strict=True)
                    except RuntimeError as e:  # another architecture or size: name the file and the part
                        lines = [ln.strip() for ln in str(e).splitlines()[1:3]]
                        raise RuntimeError(f"{path}: its {component} does not fit this model (another "
                                           f"backbone, d_z or language model?): {' '.join(lines)}") from None
                    break
            else:
                raise KeyError(f"{path}: no weights for component {component!r}")

    def forward(self, batch):
        return self.model(batch)

    def _step(self, batch, prefix):
        loss, losses, metrics, outputs = self.model(batch)
        bs = batch["scan"].shape[0]
        on_step = prefix == "train"
        for name, value in losses.items():
            self.log(f"{prefix}/{name}_loss", value.detach(), on_step=on_step, on_epoch=True, batch_size=bs,
                     sync_dist=not on_step)
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, batch_size=bs, sync_dist=not on_step)
        self.log(f"{prefix}/total_loss", loss.detach(), on_step=on_step, on_epoch=True, batch_size=bs,
                 prog_bar=True, sync_dist=not on_step)
        return loss, outputs

    def training_step(self, batch, batch_idx):
        fault_kill_at_step(self.global_step)  # tests only (SSL_MED_FAULT_KILL_STEP: kill -9 here); inert otherwise
        loss, outputs = self._step(batch, "train")
        loss = inject_nan(loss, self.global_step)  # tests only (SSL_MED_FAULT_NAN_STEP); inert otherwise
        if self.loss_watch is not None:  # on a CPU raised before backward: the weights stay those before it
            self.loss_watch.observe(loss, self.global_step, f"optimizer step; epoch {self.current_epoch}, batch "
                                    f"{batch_idx}; pretrain_model.terminate_on_nan=true stops the run")
        # detached pre-projection global vectors for the online CheXpert probes (callbacks)
        return {"loss": loss, "yg_a": outputs["yg_a"].detach(), "yg_b": outputs["yg_b"].detach()}

    def on_train_start(self):
        """pretrain_model.terminate_on_nan: watch the loss (read on the host at each logging interval and before
        every checkpoint; with fp16 mixed precision, non-finite steps are the GradScaler's to skip)."""
        if self.config.terminate_on_nan:
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            self.loss_watch = LossWatch(self.device, scaler, parameters=self.parameters())

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.loss_watch is not None and self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.loss_watch.check()

    def on_save_checkpoint(self, checkpoint):
        if self.loss_watch is not None:
            self.loss_watch.check()

    def validation_step(self, batch, batch_idx):
        loss, outputs = self._step(batch, "val")
        if batch_idx == 0 and "att_probs_a2b" in outputs and self.trainer.is_global_zero:
            k = min(4, batch["scan"].shape[0])
            self.attention_examples = [
                (batch["scan"][i].float().cpu(), list(batch["sentences"][i]) if "sentences" in batch else [],
                 outputs["att_probs_a2b"][i].float().cpu(), outputs["structure_a"],
                 str(batch.get("study_id", [str(i)] * k)[i])) for i in range(k)]
        return {"loss": loss, "yg_a": outputs["yg_a"].detach(), "yg_b": outputs["yg_b"].detach()}

    def test_step(self, batch, batch_idx):
        loss, _ = self._step(batch, "test")
        return loss

    def on_train_batch_start(self, batch, batch_idx):
        self.log("optim_0/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=batch["scan"].shape[0])

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (Lightning 2: from the estimated total, accumulation and devices included)."""
        total = self.trainer.estimated_stepping_batches
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1 or not math.isfinite(total):
            raise ValueError("cosine schedules need trainer max_epochs (pretrain_model.max_epochs) to be set")
        return max(1, math.ceil(total / epochs))

    def configure_optimizers(self):
        c = self.config
        params = [p for p in self.parameters() if p.requires_grad]
        if c.optimizer == "Adam":
            optimizer = torch.optim.Adam(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        elif c.optimizer == "AdamW":
            optimizer = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        else:
            raise ValueError(f"optimizer must be Adam or AdamW, got {c.optimizer!r}")
        schedulers = []
        for name in c.lr_scheduler or []:
            if name == "cosine_annealing_per_epoch":
                steps = self.steps_per_epoch()
                fn = cosine_factor(c.cosine_annealing_mode, steps, steps * self.trainer.max_epochs)
                sched = {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, fn), "interval": "step"}
            elif name == "cosine_annealing_warm_restarts":
                sched = {"scheduler": torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                    optimizer, T_0=self.steps_per_epoch()), "interval": "step"}
            elif name == "linear_warmup_cosine_annealing":
                total = self.steps_per_epoch() * self.trainer.max_epochs
                sched = {"scheduler": torch.optim.lr_scheduler.LambdaLR(
                    optimizer, warmup_cosine_factor(c.warmup_steps, total)), "interval": "step"}
            elif name == "reduce_on_plateau":
                sched = {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(
                    optimizer, mode="min", patience=c.lr_reduce_patience, factor=c.lr_reduce_factor),
                    "interval": "epoch", "monitor": "val/total_loss", "strict": False}
            else:
                raise ValueError(f"unknown lr_scheduler {name!r}")
            schedulers.append(sched)
        return [optimizer], schedulers
