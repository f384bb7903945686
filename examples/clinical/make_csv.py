"""Write an ordinary clinical table: four hospitals, blank cells, a category, free-text notes.

``python examples/clinical/make_csv.py DIR`` writes ``DIR/clinical.csv`` (600 patients) and
``DIR/clinical_test.csv`` (150 more). Columns: ``hospital`` (the site), ``age``, ``bmi``,
``systolic_bp``, ``glucose`` (numbers, about 5 % blank), ``smoker`` (never / former /
current, a few blank), ``notes`` (free text) and ``readmitted`` (yes / no, the label). The
label follows a logistic model of age, glucose, blood pressure and smoking, with a different
base rate per hospital, so a model can learn it but not perfectly; four notes in five sound
concerned for a readmitted patient and calm for the others (``model=text`` reads them).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

HOSPITALS = ("north", "south", "east", "west")
SMOKER = ("never", "former", "current")
CALM = (
    "patient stable on discharge",
    "no complaints at the visit",
    "family history of diabetes noted",
)
CONCERN = (
    "reports mild chest pain at night",
    "short of breath on exertion",
    "missed two follow up visits",
)


def _rows(n: int, rng: np.random.Generator) -> list[list[str]]:
    site = rng.integers(0, len(HOSPITALS), n)
    age = rng.normal(62, 12, n)
    bmi = rng.normal(27, 4, n)
    bp = rng.normal(130, 15, n)
    glucose = rng.normal(105, 20, n)
    smoker = rng.choice(len(SMOKER), n, p=[0.5, 0.3, 0.2])
    logit = (
        0.06 * (age - 62)
        + 0.05 * (glucose - 105)
        + 0.03 * (bp - 130)
        + 1.2 * (smoker == 2)
        + np.array([-0.4, 0.0, 0.3, 0.6])[site]
    )
    label = rng.random(n) < 1 / (1 + np.exp(-logit))
    rows = []
    for i in range(n):
        numbers = [f"{age[i]:.0f}", f"{bmi[i]:.1f}", f"{bp[i]:.0f}", f"{glucose[i]:.0f}"]
        numbers = ["" if rng.random() < 0.05 else v for v in numbers]
        smoke = "" if rng.random() < 0.03 else SMOKER[smoker[i]]
        k = int(rng.integers(5))  # 4 in 5 notes match the outcome
        notes = CONCERN if bool(label[i]) == (k < 4) else CALM
        note = f"{notes[k % len(notes)]} (visit {i})"
        rows.append([HOSPITALS[site[i]], *numbers, smoke, note, "yes" if label[i] else "no"])
    return rows


def write(folder: str | Path, rows: int = 600, test_rows: int = 150, seed: int = 0) -> Path:
    """Write ``clinical.csv`` and ``clinical_test.csv`` into ``folder``; return the first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    header = ["hospital", "age", "bmi", "systolic_bp", "glucose", "smoker", "notes", "readmitted"]
    for name, n in (("clinical.csv", rows), ("clinical_test.csv", test_rows)):
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(_rows(n, rng))
    return folder / "clinical.csv"


if __name__ == "__main__":
    print(write(sys.argv[1] if len(sys.argv) > 1 else "."))
