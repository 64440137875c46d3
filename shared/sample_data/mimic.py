"""MIMIC-CXR(-JPG) style studies: JPG views, free-text reports and CheXpert labels from the same drawing.

Layout (what LoVT's `mimic_cxr_dataset.py create <root>` reads):
  <root>/mimic-cxr-jpg_2-0-0/files/p1X/p<subject>/s<study>/<dicom_id>.jpg + the three csv.gz tables
  <root>/mimic-cxr_2-0-0/mimic-cxr-reports.zip (members files/p1X/p<subject>/s<study>.txt), also
  already extracted to <root>/mimic-cxr_2-0-0/mimic-cxr-reports/files/... as the original's first run does.
"""

from __future__ import annotations

import gzip
import io
import textwrap
import zipfile
from pathlib import Path

from PIL import Image

from .radiograph import render, render_lateral

CHEXPERT = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]
MIMIC_FINDINGS = [
    "Consolidation",
    "Pneumonia",
    "Effusion",
    "Cardiomegaly",
    "Pneumothorax",
    "Atelectasis",
    "Edema",
    "Nodule",
]
VIEW_MEANING = {
    "PA": "postero-anterior",
    "AP": "antero-posterior",
    "LATERAL": "lateral",
    "LL": "left lateral",
}

# finding -> (findings sentence, impression sentence, CheXpert labels it sets); {side}/{zone} filled in
SENTENCES = {
    "Consolidation": (
        "There is a focal consolidation in the {side} {zone} lung.",
        "{Side} {zone} lobe consolidation, concerning for pneumonia.",
        {"Consolidation": 1.0, "Lung Opacity": 1.0, "Pneumonia": -1.0},
    ),
    "Pneumonia": (
        "Patchy airspace opacities are seen in the {side} {zone} lung.",
        "{Side} {zone} lung pneumonia.",
        {"Pneumonia": 1.0, "Lung Opacity": 1.0},
    ),
    "Effusion": (
        "A small {side} pleural effusion blunts the costophrenic angle.",
        "Small {side} pleural effusion.",
        {"Pleural Effusion": 1.0},
    ),
    "Cardiomegaly": ("The heart is moderately enlarged.", "Moderate cardiomegaly.", {"Cardiomegaly": 1.0}),
    "Pneumothorax": (
        "There is a small {side} apical pneumothorax.",
        "Small {side} pneumothorax.",
        {"Pneumothorax": 1.0},
    ),
    "Atelectasis": (
        "Linear opacity at the {side} lung base is consistent with atelectasis.",
        "{Side} basilar atelectasis.",
        {"Atelectasis": 1.0},
    ),
    "Edema": (
        "There is mild pulmonary vascular congestion with perihilar haziness.",
        "Mild pulmonary edema.",
        {"Edema": 1.0},
    ),
    "Nodule": (
        "A nodular opacity projects over the {side} {zone} lung.",
        "{Side} {zone} lung nodule, recommend chest CT for further evaluation.",
        {"Lung Lesion": 1.0},
    ),
}


def write_report(findings, view, rng):
    """Report text in the MIMIC-CXR style plus the CheXpert labels its sentences imply."""
    labels: dict = {}
    found, impression = (
        [f"{'PA and lateral views' if view == 'PA' else 'Portable AP view'} of the chest."],
        [],
    )
    names = {f.name for f in findings}
    for f in findings:
        text, impr, lab = SENTENCES[f.name]
        fill = {"side": f.side, "zone": f.zone or "mid", "Side": f.side.capitalize()}
        found.append(text.format(**fill))
        impression.append(impr.format(**fill))
        labels.update(lab)
    if "Cardiomegaly" not in names:
        found.append("The heart size is normal.")
        labels["Cardiomegaly"] = 0.0
    found.append("The mediastinal and hilar contours are unremarkable.")
    no = [n for n, key in (("pleural effusion", "Effusion"), ("pneumothorax", "Pneumothorax")) if key not in names]
    if no:
        found.append("There is no " + " or ".join(no) + ".")
        labels.update({{"pleural effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax"}[n]: 0.0 for n in no})
    if not names & {"Consolidation", "Pneumonia", "Atelectasis", "Nodule", "Edema"}:
        found.append("The lungs are clear without focal consolidation.")
        labels["Consolidation"] = 0.0
    if not findings:
        impression = ["No acute cardiopulmonary process."]
        labels = {**labels, "No Finding": 1.0}
    sex = "woman" if rng.random() < 0.5 else "man"
    why = ["cough and fever", "shortness of breath", "chest pain", "evaluate for pneumonia"][int(rng.integers(4))]
    exam = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
    technique = "Chest PA and lateral." if view == "PA" else "Portable AP chest radiograph."
    wrap = lambda s: "\n".join(" " + ln for ln in textwrap.wrap(s, 76))  # noqa: E731
    text = (
        f"                                 FINAL REPORT\n EXAMINATION:  {exam}\n \n"
        f" INDICATION:  ___ year old {sex} with {why}.\n \n TECHNIQUE:  {technique}\n \n"
        f" COMPARISON:  None.\n \n FINDINGS:\n \n{wrap(' '.join(found))}\n \n"
        f" IMPRESSION:\n \n{wrap(' '.join(impression))}\n"
    )
    return text, labels


def _gz_csv(path: Path, header, rows):
    buf = io.StringIO()
    buf.write(",".join(header) + "\n")
    for r in rows:
        buf.write(",".join("" if v is None else str(v) for v in r) + "\n")
    path.write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))


def write_mimic(root: Path, rng, n_patients=30, studies_per_patient=2):
    """MIMIC-CXR-JPG 2.0.0 tree + csv.gz tables + MIMIC-CXR report zip (see module docstring)."""
    jpg_root, rep_root = root / "mimic-cxr-jpg_2-0-0", root / "mimic-cxr_2-0-0"
    extracted = rep_root / "mimic-cxr-reports"
    meta, split, chex, reports = [], [], [], []
    study_counter = 0
    for j in range(n_patients):
        subject = int(f"1{j % 10}{int(rng.integers(0, 10**6)):06d}")
        part = "validate" if j % 10 == 7 else ("test" if j % 10 == 9 else "train")
        for k in range(studies_per_patient):
            study_counter += 1
            study = 50000000 + study_counter * 137 + int(rng.integers(0, 100))
            folder = jpg_root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True)
            n = 0 if rng.random() < 0.35 else (1 if rng.random() < 0.7 else 2)
            findings = [str(f) for f in rng.choice(MIMIC_FINDINGS, n, replace=False)]
            view = "PA" if rng.random() < 0.7 else "AP"
            lateral_only = study_counter % 15 == 0  # dropped by the AP/PA filter
            frontal = render(rng, findings, view=view)
            views = [("LATERAL", render_lateral(rng))] if lateral_only else [(view, frontal.image)]
            if view == "PA" and not lateral_only and rng.random() < 0.6:
                views.append(("LATERAL" if rng.random() < 0.8 else "LL", render_lateral(rng)))
            date, time = (
                21800101 + 100 * (j % 12) + k * 3,
                f"{int(rng.integers(0, 235959)):06d}.{int(rng.integers(0, 999)):03d}",
            )
            desc = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
            for vp, img in views:
                dicom_id = "-".join("".join(f"{v:x}" for v in rng.integers(0, 16, 8)) for _ in range(5))
                Image.fromarray(img).save(folder / f"{dicom_id}.jpg", quality=95)
                orient = "Erect" if vp != "AP" else "Recumbent"
                meta.append([dicom_id, subject, study, desc, vp, 256, 256, date, time, desc, VIEW_MEANING[vp], orient])
                split.append([dicom_id, study, subject, part])
            text, labels = write_report(frontal.findings, view, rng)
            rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt"
            reports.append((rel, text))
            (extracted / rel).parent.mkdir(parents=True, exist_ok=True)
            (extracted / rel).write_text(text)
            chex.append([subject, study] + [labels.get(c) for c in CHEXPERT])

    _gz_csv(
        jpg_root / "mimic-cxr-2.0.0-metadata.csv.gz",
        [
            "dicom_id",
            "subject_id",
            "study_id",
            "PerformedProcedureStepDescription",
            "ViewPosition",
            "Rows",
            "Columns",
            "StudyDate",
            "StudyTime",
            "ProcedureCodeSequence_CodeMeaning",
            "ViewCodeSequence_CodeMeaning",
            "PatientOrientationCodeSequence_CodeMeaning",
        ],
        meta,
    )
    _gz_csv(jpg_root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    _gz_csv(jpg_root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id"] + CHEXPERT, chex)
    with zipfile.ZipFile(rep_root / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, text in reports:
            info = zipfile.ZipInfo(rel, date_time=(2019, 1, 1, 0, 0, 0))  # fixed time: same bytes every run
            info.external_attr = 0o644 << 16
            zf.writestr(info, text, zipfile.ZIP_DEFLATED)
