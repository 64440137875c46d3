"""Self-discovery steps 1-2: train the whole-volume autoencoder, then extract one feature per patient.

Every volume is resized once to the autoencoder input (128 x 128 x 64 by default; scikit-image's `resize`
semantics: linear, anti-aliased) and kept in memory, instead of being re-read and re-resized every epoch.
Training follows the original Keras set-up: MSE, Adam 1e-3, ReduceLROnPlateau(val_loss, 0.5, patience
20, min_delta 1e-4, min_lr 1e-6), EarlyStopping(val_loss, patience 50), the best model kept,
floor(N / batch) batches per epoch for training and for validation.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared.checkpoint import load_checkpoint, rng_state, save_atomic, set_generator_state, set_rng_state
from shared.genesis.ct_volumes import VolumeReadError, read_volume, to_unit_range
from shared.genesis.self_discovery.models import Autoencoder3D
from shared.genesis.self_discovery.volumes import resize_cube


def list_volumes(folder) -> list[Path]:
    """Sorted `*.npy` of a prepared split folder (the original globbed `*`)."""
    folder = Path(folder)
    paths = sorted(folder.glob("*.npy"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no .npy volumes (run prepare_data.py first)")
    return paths


def _load_one(path, shape):
    """(resized volume, None) or (None, error message): runs in a worker process."""
    try:
        return resize_cube(to_unit_range(read_volume(path, normalize=False)), shape), None
    except VolumeReadError as e:
        return None, str(e)


def load_resized(paths, shape, progress=True, desc="load volumes", workers=0):
    """(N x X x Y x Z float32 in [0, 1], the paths kept); unreadable files are skipped with a warning.

    workers > 0 reads and resizes in that many processes (whole LUNA16 scans take seconds each).
    """
    shape = tuple(shape)
    if workers > 0:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            results = list(tqdm(pool.map(_load_one, paths, [shape] * len(paths)), total=len(paths), desc=desc,
                                disable=not progress))
    else:
        results = [_load_one(p, shape) for p in tqdm(paths, desc=desc, disable=not progress)]
    volumes, kept = [], []
    for path, (volume, error) in zip(paths, results):
        if error is not None:
            warnings.warn(f"skipping {error}", stacklevel=2)
            continue
        volumes.append(volume)
        kept.append(Path(path))
    if not volumes:
        raise RuntimeError(f"none of the {len(paths)} volumes could be read")
    if len(kept) < len(paths):
        print(f"{desc}: skipped {len(paths) - len(kept)} of {len(paths)} unreadable volumes")
    return np.stack(volumes), kept


def build_autoencoder(arch="Unet", width=32):
    return Autoencoder3D(arch=arch, width=width)


def _epoch(model, volumes, batch_size, optimizer=None, generator=None, device="cpu"):
    """Mean MSE and MAE over floor(N / batch) batches; trains when an optimizer is given."""
    train = optimizer is not None
    model.train(train)
    order = torch.randperm(len(volumes), generator=generator) if train else torch.arange(len(volumes))
    n_batches = len(volumes) // batch_size
    mse = mae = torch.zeros((), device=device)  # summed on the device: no host sync per batch
    with torch.set_grad_enabled(train):
        for b in range(n_batches):
            x = torch.from_numpy(volumes[order[b * batch_size:(b + 1) * batch_size].numpy()])[:, None].to(device)
            y = model(x)  # the input is its own target: no corruption
            loss = F.mse_loss(y, x)
            if train:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            mse = mse + loss.detach()
            mae = mae + F.l1_loss(y.detach(), x)
    return float(mse) / n_batches, float(mae) / n_batches


def train_autoencoder(data_dir, model_path="Checkpoints/Autoencoder", arch="Unet", width=32,
                      input_shape=(128, 128, 64), batch_size=8, nb_epoch=10000, patience=50, lr=1e-3,
                      weights=None, resume=False, seed=1, device=None, progress=True, tensorboard=True,
                      workers=0):
    """Train on `<data_dir>/train`, validate on `<data_dir>/validation`; returns the best checkpoint path.

    Writes `<model_path>/<arch>_autoencoder.pt` (best val_loss) and `<arch>_autoencoder_last.pt`
    (every epoch, for --resume); the run's record, metrics and TensorBoard events are named after it too
    (`<arch>_autoencoder.run.json`, `.metrics.csv`, `.config.json`, `tensorboard/<arch>_autoencoder/`), so
    both methods' self-discovery share `Checkpoints/Autoencoder/` as in the originals, and a run of the
    same architecture with other settings is refused (shared/runfolder.py).
    """
    from shared.runfolder import check_checkpoint_run, claim_run_folder
    from shared.runlog import RunLogger

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    model_path, run_name = Path(model_path), f"{arch}_autoencoder"
    best_path = model_path / f"{run_name}.pt"
    last_path = model_path / f"{run_name}_last.pt"
    data_dir = Path(data_dir)
    identity = {"method": run_name, "width": width, "input_shape": list(input_shape), "batch_size": batch_size,
                "lr": lr, "seed": seed, "weights": str(weights) if weights else None,
                "data_dir": str(data_dir.resolve())}
    train_x, _ = load_resized(list_volumes(data_dir / "train"), input_shape, progress, "load train volumes", workers)
    val_x, _ = load_resized(list_volumes(data_dir / "validation"), input_shape, progress, "load val volumes", workers)
    for name, x in (("training", train_x), ("validation", val_x)):
        if len(x) < batch_size:
            raise ValueError(f"{len(x)} {name} volumes is fewer than --batch_size {batch_size}: "
                             f"no full batch (the original drops incomplete batches)")
    claim_run_folder(model_path, run_name, identity, resume=resume, flag="--model_path")
    model = build_autoencoder(arch, width).to(device)
    if weights:
        model.load_state_dict(load_checkpoint(weights)["state_dict"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=20, threshold=1e-4, threshold_mode="abs", min_lr=1e-6)
    generator = torch.Generator().manual_seed(seed)
    config = {"arch": arch, "width": width, "input_shape": list(input_shape)}
    start, best_loss, no_improvement = 0, float("inf"), 0
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path)
        check_checkpoint_run(ckpt, identity, last_path)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        set_generator_state(generator, ckpt["generator"])
        set_rng_state(ckpt["rng"])
        start, best_loss, no_improvement = ckpt["epoch"], ckpt["best_loss"], ckpt["num_epoch_no_improvement"]
    logger = RunLogger(model_path, tensorboard=tensorboard, config=dict(config, lr=lr, batch_size=batch_size),
                       name=run_name)
    logger.truncate(start)  # rows of epochs after the checkpoint (a run killed in between) come again
    bar = tqdm(range(start, nb_epoch), desc=f"{arch} autoencoder", disable=not progress)
    for epoch in bar:
        train_mse, train_mae = _epoch(model, train_x, batch_size, optimizer, generator, device)
        val_mse, val_mae = _epoch(model, val_x, batch_size, device=device)
        scheduler.step(val_mse)
        logger.log(epoch + 1, loss=train_mse, mae=train_mae, val_loss=val_mse, val_mae=val_mae,
                   lr=optimizer.param_groups[0]["lr"])
        bar.set_postfix(loss=f"{train_mse:.4f}", val_loss=f"{val_mse:.4f}")
        if val_mse < best_loss:  # Keras ModelCheckpoint(save_best_only) / EarlyStopping(min_delta=0)
            best_loss, no_improvement = val_mse, 0
            save_atomic({"epoch": epoch + 1, "state_dict": model.state_dict(), "best_loss": float(best_loss),
                         "config": config}, best_path)
        else:
            no_improvement += 1
        save_atomic({"epoch": epoch + 1, "state_dict": model.state_dict(),
                     "optimizer_state_dict": optimizer.state_dict(),
                     "scheduler_state_dict": scheduler.state_dict(), "generator": generator.get_state(),
                     "rng": rng_state(), "best_loss": float(best_loss),
                     "num_epoch_no_improvement": no_improvement, "config": config, "run": identity}, last_path)
        if no_improvement >= patience:
            break
    logger.close()
    return best_path


def load_autoencoder(weights, arch=None, width=None, device="cpu"):
    """An Autoencoder3D from our checkpoint; the stored arch/width win, and a conflicting flag is an error."""
    ckpt = load_checkpoint(weights, map_location=device)
    stored = ckpt.get("config", {})
    for key, given in (("arch", arch), ("width", width)):
        if given is not None and key in stored and stored[key] != given:
            raise ValueError(f"{weights}: trained with --{key} {stored[key]}, but --{key} {given} was given")
    model = build_autoencoder(stored.get("arch", arch or "Unet"), stored.get("width", width or 32))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


@torch.no_grad()
def extract_features(model, paths, input_shape, batch_size=8, device="cpu", progress=True, desc="features",
                     workers=0):
    """(N x 16w float32 features, the paths kept): GAP of the deepest encoder level, BN in inference mode."""
    volumes, kept = load_resized(paths, input_shape, progress, f"load {desc}", workers)
    model.eval()
    feats = [model.features(torch.from_numpy(volumes[i:i + batch_size])[:, None].to(device)).cpu()
             for i in range(0, len(volumes), batch_size)]
    return torch.cat(feats).numpy().astype(np.float32), kept


def save_features(features, paths, out_path):
    """`<name>.npy` (the original's file) and `<name>.files.txt` (its rows' volumes, in order)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, features)
    files_path = out_path.with_suffix(".files.txt")
    files_path.write_text("".join(f"{Path(p).resolve()}\n" for p in paths))
    return out_path, files_path


def feature_files(features_path, folder):
    """The volumes a features file was computed from: its `.files.txt` when present, else the sorted
    `*.npy` of `folder` (the original's assumption)."""
    listing = Path(features_path).with_suffix(".files.txt")
    if listing.exists():
        return [Path(line) for line in listing.read_text().splitlines() if line.strip()]
    return list_volumes(folder)
