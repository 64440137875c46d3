"""A cartoon chest radiograph renderer with localised findings.

Images are built as an attenuation map (bright = dense) in rows x columns, shown the usual way: the
patient's right is on the image left. Each finding is painted at a recorded place (side in patient
terms, upper/lower zone) and returned with its mask, so labels, boxes, masks and report sentences all
come from the same drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .phantoms import blob, branching_tree, ellipsoid, segment, smooth_noise

# NIH ChestX-ray14 label order used by the DiRA / benchmark list files.
FINDINGS14 = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]


@dataclass
class Finding:
    name: str
    side: str  # patient side: "right" (image left), "left" (image right) or "bilateral"
    zone: str  # "upper", "lower" or "" (whole lung / heart)
    mask: np.ndarray  # bool HxW, where the finding was drawn


@dataclass
class Radiograph:
    image: np.ndarray  # uint8 HxW
    lungs: np.ndarray  # bool HxW lung fields
    findings: list


def _line(shape, p0, p1, width):
    return segment(shape, p0, p1, width / 2)


def render(rng, findings=(), size=256, view="PA", sides=None):
    """Draw one frontal radiograph with the named findings (names from FINDINGS14).

    `sides` optionally fixes the patient side per finding name ({"Effusion": "left"}).
    """
    S = size
    sides = dict(sides or {})
    shape = (S, S)
    rows, cols = np.mgrid[:S, :S].astype(np.float32)
    k = rng.uniform(0.93, 1.05)  # patient size
    cr, cc = S * 0.5 + rng.uniform(-6, 6), S * 0.5 + rng.uniform(-6, 6)
    att = np.full(shape, 0.03, np.float32)
    att += 0.34 * ellipsoid(shape, (cr + 0.08 * S, cc), (0.62 * S * k, 0.44 * S * k))

    emphysema = "Emphysema" in findings
    lung_v = 0.27 * S * k * (1.12 if emphysema else 1.0)
    lung_c = {}
    lungs = np.zeros(shape, bool)
    for side, sgn in (("right", -1), ("left", 1)):
        centre = (cr - 0.02 * S + (0.0 if sgn > 0 else -0.015 * S), cc + sgn * 0.17 * S * k)
        m = ellipsoid(shape, centre, (lung_v, 0.125 * S * k))
        m &= np.abs(cols - cc) > 0.05 * S  # mediastinum
        lung_c[side] = (centre, m)
        lungs |= m
    att -= (0.26 if emphysema else 0.2) * ndimage.gaussian_filter(lungs.astype(np.float32), 2)

    heart_scale = rng.uniform(1.35, 1.5) if "Cardiomegaly" in findings else rng.uniform(0.9, 1.05)
    heart = ellipsoid(shape, (cr + 0.13 * S, cc + 0.04 * S), (0.11 * S * heart_scale, 0.13 * S * heart_scale))
    att += 0.15 * heart
    att += 0.12 * (np.abs(cols - cc) < 0.045 * S) * (rows < cr + 0.2 * S)  # mediastinum
    att += 0.1 * (np.abs(cols - cc) < 0.025 * S)  # spine
    att += 0.08 * ((rows > cr + 0.22 * S) & (att > 0.2))  # abdomen under the diaphragm

    ribs = np.zeros(shape, bool)
    for sgn in (-1, 1):
        for i in range(9):
            r0 = cr - 0.27 * S + i * 0.062 * S
            x = np.abs(cols - cc) / (0.42 * S)
            curve = r0 - 0.05 * S * (1 - (x - 0.55) ** 2 / 0.3) + 0.02 * S * x
            ribs |= (np.abs(rows - curve) < 1.8 + 0.4 * i / 9) & (np.sign(cols - cc) == sgn) & (x > 0.06) & (x < 0.95)
        att += 0.12 * _line(shape, (cr - 0.3 * S, cc + sgn * 0.05 * S), (cr - 0.37 * S, cc + sgn * 0.36 * S), 5)
    att += 0.07 * (ribs & (att > 0.1))

    # vessel markings fan out from the hila; a pneumothorax removes them from its rim
    markings = np.zeros(shape, bool)
    for sgn in (-1, 1):
        hilum = np.array([cr, cc + sgn * 0.09 * S])
        for _ in range(5):
            d = np.array([rng.normal(0, 0.8), sgn * rng.uniform(0.4, 1.0)])
            for p0, p1, r in branching_tree(rng, hilum, d, 0.1 * S, 1.3, 2, spread=0.6):
                markings |= segment(shape, p0, p1, r)

    out = []
    for name in findings:
        side = sides.get(name) or ("left" if rng.random() < 0.5 else "right")
        (lr, lc), lung = lung_c[side]
        zone = "upper" if rng.random() < 0.5 else "lower"
        zr = lr + (-0.4 if zone == "upper" else 0.35) * lung_v
        inside = lung
        if name in ("Nodule", "Mass"):
            r = rng.uniform(3.5, 6) if name == "Nodule" else rng.uniform(11, 17)
            m = blob(rng, shape, (zr + rng.uniform(-8, 8), lc + rng.uniform(-12, 12)), r, 0.15) & inside
            att += (0.3 if name == "Nodule" else 0.28) * m
        elif name in ("Consolidation", "Pneumonia", "Infiltration", "Atelectasis"):
            if name == "Atelectasis":
                zone = "lower"
                m = ellipsoid(shape, (lr + 0.45 * lung_v, lc), (0.035 * S, 0.09 * S))
            else:
                m = blob(rng, shape, (zr, lc + rng.uniform(-8, 8)), rng.uniform(0.08, 0.12) * S, 0.3)
                if name != "Consolidation":
                    m &= smooth_noise(rng, shape, 3, 1.0) > (0.2 if name == "Pneumonia" else 0.3)
            m &= inside
            att += {"Consolidation": 0.24, "Pneumonia": 0.2, "Infiltration": 0.17, "Atelectasis": 0.2}[name] * m
        elif name == "Effusion":
            zone = "lower"
            level = lr + rng.uniform(0.45, 0.65) * lung_v - 0.25 * np.abs(cols - lc)  # meniscus up the wall
            m = inside & (rows > level) & (rows > lr)
            att += 0.3 * ndimage.gaussian_filter(m.astype(np.float32), 1.5)
        elif name == "Pneumothorax":
            zone = "upper"
            shrunk = ellipsoid(shape, (lr + 0.12 * lung_v, lc - np.sign(lc - cc) * 6), (0.82 * lung_v, 0.09 * S * k))
            m = inside & ~shrunk & (rows < lr + 0.2 * lung_v)
            markings &= ~m
            att -= 0.06 * m
            att += 0.08 * (ndimage.binary_dilation(shrunk) & ~shrunk & inside & (rows < lr + 0.2 * lung_v))
        elif name == "Edema":
            side, zone = "bilateral", ""
            m = np.zeros(shape, bool)
            for s2 in ("right", "left"):
                (r2, c2), l2 = lung_c[s2]
                m |= ellipsoid(shape, (cr, cc + np.sign(c2 - cc) * 0.13 * S), (0.14 * S, 0.09 * S)) & l2
            att += 0.13 * ndimage.gaussian_filter(m.astype(np.float32), 4) + 0.05 * m * (
                smooth_noise(rng, shape, 1, 1) > 0.5
            )
        elif name == "Emphysema":
            side, zone, m = "bilateral", "", lungs.copy()
        elif name == "Fibrosis":
            zone = "lower"
            m = inside & (rows > lr) & (smooth_noise(rng, shape, 0.8, 1.0) > 0.7)
            att += 0.12 * m
        elif name == "Pleural_Thickening":
            m = ndimage.binary_dilation(inside, iterations=3) & ~inside & (np.abs(rows - zr) < 0.12 * S)
            m &= np.abs(cols - cc) > np.abs(lc - cc)
            att += 0.2 * m
        elif name == "Hernia":
            side, zone = "bilateral", "lower"
            m = ellipsoid(shape, (cr + 0.2 * S, cc + 0.02 * S), (0.06 * S, 0.08 * S))
            att += 0.1 * m - 0.12 * (m & (rows < cr + 0.2 * S))
        elif name == "Cardiomegaly":
            side, zone, m = "bilateral", "", heart
        else:
            raise ValueError(f"unknown finding {name!r}")
        out.append(Finding(name, side, zone, m))

    att += 0.05 * (markings & lungs)
    att = ndimage.gaussian_filter(att, 1.0) + smooth_noise(rng, shape, 8, 0.015) + rng.normal(0, 0.012, shape)
    if view == "AP":  # portable films: more magnified heart is already the scale; lower contrast
        att = 0.85 * att + 0.05
    img = np.clip(att * rng.uniform(1.2, 1.35) + rng.uniform(0.02, 0.08), 0, 1) ** rng.uniform(0.8, 1.0)
    return Radiograph((img * 255).round().astype(np.uint8), lungs, out)


def render_lateral(rng, size=256):
    """A crude lateral view (anterior on the image left): only needs to look unlike a frontal one."""
    S = size
    shape = (S, S)
    att = np.full(shape, 0.03, np.float32)
    att += 0.4 * ellipsoid(shape, (0.55 * S, 0.5 * S), (0.6 * S, 0.36 * S))
    lung = ellipsoid(shape, (0.45 * S, 0.52 * S), (0.3 * S, 0.22 * S))
    att -= 0.22 * lung
    att += 0.18 * ellipsoid(shape, (0.62 * S, 0.38 * S), (0.14 * S, 0.12 * S))  # heart, anterior
    att += 0.25 * (np.abs(np.arange(S) - 0.8 * S) < 0.04 * S)[None, :]  # spine, posterior
    att = ndimage.gaussian_filter(att, 1.5) + rng.normal(0, 0.012, shape)
    return (np.clip(att * 1.25 + 0.05, 0, 1) * 255).round().astype(np.uint8)
