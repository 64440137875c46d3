"""Two downstream tasks on the sample data for given backbone weights vs random init (for `make demo`).

    from lovt.evaluation.demo import run_demo_tasks
    rows = run_demo_tasks("data/sample", "runs/demo/lovt/backbone_weights.pt", "runs/demo/lovt/downstream")
    # {'rsna_frozen_100': {'metric': 'mAP', 'pretrained': .., 'random': ..}, 'rsna_seg_linear_100': {...}}

The RSNA sample (shared.sample_data `rsna-pneumonia/`) is prepared once into `<out>/prepared/rsna`, then
YOLOv3 (frozen, mAP) and the linear segmentation head (Dice) are trained for a few steps at a small input
size, once from the given weights and once from random init, with the same seed.
"""

import json
import time
from pathlib import Path

from .data import COVID, NIH, OBJECT, RSNA, SAMPLE_FOLDERS, SIIM
from .engine import run_downstream
from .prepare import PREPARE
from .tasks import get_task

DEMO_TASKS = ("rsna_frozen_100", "rsna_seg_linear_100")
FAMILY_PREPARE = {RSNA: "rsna", COVID: "covid", SIIM: "siim", OBJECT: "object", NIH: "nih"}


def prepare_sample(sample_root, family, out=None):
    """Prepare one dataset family of the sample data (seed 0) unless already done; returns its folder.
    `family` is the original folder name (lovt.evaluation.data.RSNA, ...); `out` defaults to in place."""
    raw = Path(sample_root) / SAMPLE_FOLDERS[family]
    out = Path(out or raw)
    if not (out / "dataset_statistics.json").is_file():
        kwargs = {"include_no_findings": 10} if family == NIH else {}
        PREPARE[FAMILY_PREPARE[family]](raw, out=out, seed=0, **kwargs)
    return out


def prepare_sample_rsna(sample_root, out):
    return prepare_sample(sample_root, RSNA, out)


def run_demo_tasks(sample_root, backbone_weights, out_dir, *, input_size=64, batch_size=8, max_steps=6,
                   max_epochs=2, seed=0, device=None, tasks=DEMO_TASKS, progress=False, random_weights="random",
                   prepared_rsna=None):
    """Returns {task: {'metric', 'pretrained', 'random', 'wall_time_s'}} and writes <out_dir>/demo_tasks.json.
    About 15 s on 2 CPU cores with the defaults (a smoke test: the sample is far too small for real numbers).
    random_weights: the random-init arm ('random': torchvision's init under the seed, or a weights file, e.g. a
    random init whose BatchNorm statistics were re-estimated); prepared_rsna: an RSNA folder already prepared
    (default: the sample's, prepared under <out_dir>/prepared/rsna)."""
    out_dir = Path(out_dir)
    where = {"folders": {RSNA: prepared_rsna or prepare_sample_rsna(sample_root, out_dir / "prepared" / "rsna")}}
    rows = {}
    for name in tasks:
        task = get_task(name, batch_size=batch_size)
        row, t0 = {"metric": task.reported}, time.perf_counter()
        for label, weights in (("pretrained", backbone_weights), ("random", random_weights)):
            res = run_downstream(task, weights, out_dir / name / label, seed=seed, input_size=input_size,
                                 where=where, device=device, max_epochs=max_epochs, max_steps=max_steps,
                                 progress=progress)
            row[label] = res["test"][task.reported]
        row["wall_time_s"] = time.perf_counter() - t0
        rows[name] = row
    (out_dir / "demo_tasks.json").write_text(json.dumps(rows, indent=2))
    return rows
