"""One run folder, one run: the method and key settings of a run are recorded in `<run_dir>/run.json`.

`claim_run_folder` refuses a folder that holds another method's or configuration's run (so a `--resume`
never continues someone else's checkpoint and `metrics.csv` / `config.json` never mix), and, when a run
starts afresh in its own folder, moves the earlier `metrics.csv` aside (`metrics.1.csv`, ...) instead of
appending to it. Checkpoints carry the same record (`"run"`), checked by `check_checkpoint_run` on resume.
`setting_differences` and `set_metrics_aside` are the two steps, for methods whose runs record their
configuration elsewhere (DiRA's checkpoint `args` and config.json, LoVT's Lightning hyper-parameters).
"""

import json
import os
import warnings
from pathlib import Path

RUN_FILE = "run.json"


class RunFolderClash(ValueError):
    """The run folder or checkpoint belongs to another method or configuration."""


def _plain(identity):
    return json.loads(json.dumps(identity, default=str))  # tuples -> lists, paths -> str: what run.json holds


def setting_differences(recorded, current, may_change=(), name=str):
    """`["<name(key)>: <recorded> there, <current> now", ...]` for the settings that differ, sorted by key.

    Only settings both sides hold are compared: one added to the code since the run was recorded (or one
    the other side never had) does not block a resume. `may_change`: settings a resumed run may change
    (its length, its worker count, ...); `name`: how the user spells a setting (e.g. as a flag).
    Every method's resume check goes through this comparison."""
    keys = sorted((set(recorded) & set(current)) - set(may_change))
    return [f"{name(k)}: {recorded[k]!r} there, {current[k]!r} now" for k in keys if recorded[k] != current[k]]


def set_metrics_aside(run_dir):
    """A fresh start in a used run folder: the earlier `metrics.csv` becomes `metrics.<n>.csv` (kept, never
    appended to nor overwritten), with a warning; returns its new path, or None when there was none."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return None
    n = 1
    while (run_dir / f"metrics.{n}.csv").exists():
        n += 1
    aside = metrics.rename(run_dir / f"metrics.{n}.csv")
    warnings.warn(f"{run_dir}: starting afresh (no resume); the earlier metrics.csv is now {aside.name}",
                  stacklevel=3)
    return aside


def claim_run_folder(run_dir, identity, resume=False, enabled=True, flag="--output_dir"):
    """Check `<run_dir>/run.json` against `identity` (a dict of JSON values, 'method' first), then write it.

    Raises RunFolderClash naming the folder and every differing setting. `enabled=False` (ranks other
    than 0) only checks."""
    run_dir, identity = Path(run_dir), _plain(identity)
    path = run_dir / RUN_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        diff = setting_differences(recorded, identity)
        if diff:
            raise RunFolderClash(
                f"{run_dir}: this run folder holds a run of {recorded.get('method')!r} with other settings ("
                + "; ".join(diff) + f"). Use another {flag}, or the same settings to continue it.")
    if not enabled:
        return identity
    if not resume:  # a fresh start: keep the earlier run's log, do not append to it
        set_metrics_aside(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_FILE}.tmp")  # atomic: other ranks may be reading it
    tmp.write_text(json.dumps(identity, indent=2) + "\n")
    os.replace(tmp, path)
    return identity


def check_checkpoint_run(checkpoint, identity, path):
    """Refuse to resume from a checkpoint whose recorded run ('run' entry) differs from `identity`."""
    recorded = checkpoint.get("run") if isinstance(checkpoint, dict) else None
    if recorded is None:
        return  # written before runs were recorded: nothing to compare
    diff = setting_differences(recorded, _plain(identity))
    if diff:
        raise RunFolderClash(f"{path}: a checkpoint of a {recorded.get('method')!r} run with other settings ("
                             + "; ".join(diff) + "); refusing to resume from it.")
