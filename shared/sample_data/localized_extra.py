"""Two more localized-evaluation datasets for LoVT: COVID rural opacity masks and Object-CXR foreign objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .ct import _write_csv
from .radiograph import render

OPACITIES = ("Pneumonia", "Consolidation", "Infiltration")


def write_covid_rural(root: Path, rng, n_images=24, n_patients=10):
    """covid_rural_annot layout: jpgs/COVID-19-AR-<id>_<date>-XR.jpg (colour JPEGs) and pngs_masks/<same>.png
    (0/1 opacity masks, the union of the drawn opacities); two images have no mask (the original skips them)."""
    (root / "jpgs").mkdir(parents=True)
    (root / "pngs_masks").mkdir()
    patients = [16406400 + int(v) for v in rng.choice(9000, n_patients, replace=False)]
    visits = {}
    for i in range(n_images):
        pid = patients[i % n_patients]
        visits[pid] = visits.get(pid, 0) + 1
        name = f"COVID-19-AR-{pid}_{visits[pid]:02d}-{1 + i % 28:02d}-2012-XR"
        k = int(rng.integers(0, 3))  # 0: clear lungs, else 1-2 opacities
        findings = list(rng.choice(OPACITIES, k, replace=False)) if k else []
        r = render(rng, findings, view="AP")
        Image.fromarray(np.stack([r.image] * 3, -1)).save(root / "jpgs" / f"{name}.jpg", quality=92)
        if i >= n_images - 2:
            continue  # no annotation for the last two images
        mask = np.zeros(r.image.shape, np.uint8)
        for f in r.findings:
            if f.name in OPACITIES:
                mask |= f.mask.astype(np.uint8)
        Image.fromarray(mask).save(root / "pngs_masks" / f"{name}.png")


def _foreign_objects(rng, size):
    """1-3 objects: (annotation string, draw function) with boxes (0), ellipses (1), polygons (2)."""
    out = []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 3))
        w, h = (int(v) for v in rng.integers(8, 40, 2))
        x1, y1 = int(rng.integers(10, size - w - 10)), int(rng.integers(10, size - h - 10))
        if kind < 2:
            out.append((f"{kind} {x1} {y1} {x1 + w} {y1 + h}", kind, [(x1, y1), (x1 + w, y1 + h)]))
        else:
            n = int(rng.integers(3, 6))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = [(int(x1 + w / 2 + w / 2 * np.cos(a)), int(y1 + h / 2 + h / 2 * np.sin(a))) for a in ang]
            out.append(("2 " + " ".join(f"{x} {y}" for x, y in pts), kind, pts))
    return out


def write_object_cxr(root: Path, rng, n_train=24, n_dev=8):
    """object-CXR challenge layout: input/train.csv and input/dev.csv (image_name, annotation: ';'-separated
    'type coords', type 0 box / 1 ellipse as x1 y1 x2 y2, 2 polygon x y x y ...) and input/{train,dev}/*.jpg.
    Half of the images carry bright foreign objects (wires, buttons, devices) at the annotated places."""
    for split, n, offset in (("train", n_train, 0), ("dev", n_dev, 8000)):
        (root / "input" / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            name = f"{offset + i + 1:05d}.jpg"
            img = Image.fromarray(render(rng, [], view="PA").image)
            objects = _foreign_objects(rng, img.size[0]) if i % 2 == 0 else []
            draw = ImageDraw.Draw(img)
            for _, kind, pts in objects:
                shade = int(rng.integers(220, 256))
                if kind == 0:
                    draw.rectangle([*pts[0], *pts[1]], fill=shade)
                elif kind == 1:
                    draw.ellipse([*pts[0], *pts[1]], fill=shade)
                else:
                    draw.polygon(pts, fill=shade)
            img.save(root / "input" / split / name, quality=92)
            rows.append([name, ";".join(a for a, _, _ in objects)])
        _write_csv(root / "input" / f"{split}.csv", ["image_name", "annotation"], rows)
