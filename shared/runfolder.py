"""Runs side by side in one folder: everything this project adds to a run folder is named after the run.

Semantic Genesis and TransVW both write `Checkpoints/en_de/` (as the originals do, under their own checkpoint
names), the two VoCo stages both default to `logs/`. So a run's record, log and resume state carry its name
(the checkpoint stem, `--exp_name`): `<name>.run.json` (method and key settings), `<name>.metrics.csv`
(earlier logs of a fresh start: `<name>.metrics.<n>.csv`), `<name>.config.json`, `<name>.last.pt`,
`tensorboard/<name>/`, `images/<name>/`. `run_file(run_dir, name, "last.pt")` gives those paths.

`claim_run_folder` refuses only the one real clash, the same name with other settings (naming them), and on a
fresh start moves the run's earlier metrics aside instead of appending to them. Checkpoints carry the same
record (`"run"`), checked by `check_checkpoint_run` on resume, so a run never continues another's checkpoint.

A folder written before runs were named (`run.json`, `last.pt`, `metrics.csv`, ... for the whole folder):
when its `run.json` is this run (same method and settings) the files are renamed to this run's names, so
`--resume` continues it; the same method with other settings is refused like a named run; another method's
run is left where it is (none of its files has a name this run writes).
`setting_differences` and `set_metrics_aside` are the steps alone, for methods whose runs record their
configuration elsewhere (DiRA's checkpoint `args` and config.json, LoVT's Lightning hyper-parameters).
"""

import json
import os
import warnings
from pathlib import Path

LEGACY_RECORD = "run.json"  # the folder-wide record before runs were named
# folder-wide files of that layout; each becomes `<name>.<file>` (metrics.<n>.csv too), folders `<folder>/<name>/`
LEGACY_FILES = ("last.pt", "best.pt", "metrics.csv", "config.json", "skipped.txt", "loss.png", "crops.png",
                "predictions.png")
LEGACY_FOLDERS = ("tensorboard", "images")


class RunFolderClash(ValueError):
    """A run of the same name with other settings, or a checkpoint of another run."""


def run_file(run_dir, name, file):
    """`<run_dir>/<name>.<file>` ("last.pt", "metrics.csv", ...): a file of run `name`; the folder's own
    `<run_dir>/<file>` when `name` is None (methods that give every run its own folder)."""
    return Path(run_dir) / (file if name is None else f"{name}.{file}")


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


def set_metrics_aside(run_dir, name=None):
    """A fresh start of a run that logged before: its `<name>.metrics.csv` becomes `<name>.metrics.<n>.csv`
    (kept, never appended to nor overwritten), with a warning; returns its new path, or None when there was
    none. `name` None: the folder's `metrics.csv` (one run per folder)."""
    metrics = run_file(run_dir, name, "metrics.csv")
    if not metrics.is_file():
        return None
    n = 1
    while run_file(run_dir, name, f"metrics.{n}.csv").exists():
        n += 1
    aside = metrics.rename(run_file(run_dir, name, f"metrics.{n}.csv"))
    warnings.warn(f"{run_dir}: starting afresh (no resume); the earlier {metrics.name} is now {aside.name}",
                  stacklevel=3)
    return aside


def _clash(run_dir, what, recorded, diff, flag):
    return RunFolderClash(f"{run_dir}: {what} holds a run of {recorded.get('method')!r} with other settings ("
                          + "; ".join(diff) + f"). Use another {flag}, or the same settings to continue it.")


def migrate_legacy_run(run_dir, name):
    """Rename the folder-wide files of the earlier layout to run `name`'s; returns the new paths. The record
    goes last: a migration cut short is finished by the next start, and a rank that reads the new record
    finds the run's files under their new names."""
    run_dir, moved = Path(run_dir), []
    for folder in LEGACY_FOLDERS:
        loose = [p for p in sorted((run_dir / folder).glob("*")) if p.is_file()]
        if loose:
            (run_dir / folder / name).mkdir(parents=True, exist_ok=True)
            moved += [p.rename(run_dir / folder / name / p.name) for p in loose]
    files = [*LEGACY_FILES, *(p.name for p in sorted(run_dir.glob("metrics.*.csv"))), LEGACY_RECORD]
    for file in files:
        if (run_dir / file).is_file() and not run_file(run_dir, name, file).exists():
            moved.append((run_dir / file).rename(run_file(run_dir, name, file)))
    return moved


def _read_legacy_record(run_dir):
    try:
        return json.loads((Path(run_dir) / LEGACY_RECORD).read_text())
    except FileNotFoundError:  # none, or rank 0 renamed it just now (then the run's own record is there)
        return None


def _adopt_legacy_run(run_dir, name, identity, enabled, flag):
    """The earlier layout's run.json: this run's -> renamed to its names; the same method with other settings
    -> refused (on every rank: each reads the same record); another method's -> left alone."""
    recorded = _read_legacy_record(run_dir)
    if recorded is None:
        return
    diff = setting_differences(recorded, identity)
    if diff and recorded.get("method") == identity.get("method"):
        raise _clash(run_dir, "run.json (written before runs were named)", recorded, diff, flag)
    if not enabled:
        return
    if diff:
        print(f"{run_dir}: run.json, metrics.csv, ... there belong to a run of {recorded.get('method')!r} "
              f"(written before runs were named); left untouched, this run writes {name}.*")
        return
    moved = migrate_legacy_run(run_dir, name)
    print(f"{run_dir}: renamed this run's files of the earlier layout to {name}.* ({len(moved)} files)")


def claim_run_folder(run_dir, name, identity, resume=False, enabled=True, flag="--exp_name or --output_dir"):
    """Check `<run_dir>/<name>.run.json` against `identity` (a dict of JSON values, 'method' first), then
    write it. Raises RunFolderClash naming the folder and every differing setting; `flag`: how to choose
    another run name or folder. `enabled=False` (ranks other than 0) only checks."""
    run_dir, identity = Path(run_dir), _plain(identity)
    path = run_file(run_dir, name, "run.json")
    if not path.is_file():
        _adopt_legacy_run(run_dir, name, identity, enabled, flag)
    if path.is_file():
        recorded = json.loads(path.read_text())
        diff = setting_differences(recorded, identity)
        if diff:
            raise _clash(run_dir, path.name, recorded, diff, flag)
    if not enabled:
        return identity
    if not resume:  # a fresh start: keep the earlier run's log, do not append to it
        set_metrics_aside(run_dir, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # atomic: other ranks may be reading it
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
