"""Dose records as pharmacometricians write them: a NONMEM-style table in CSV.

Columns (case-insensitive): ID, TIME (hours from the start), DRUG (a pulsehpg drug
name; CMT is accepted as a synonym), AMT, II, ADDL, RATE, EVID.

* EVID 1: a dose of AMT at TIME, repeated ADDL more times every II hours
  (ADDL = 0 with II > 0 is one dose). RATE > 0 makes each dose an infusion of
  AMT at RATE per hour, which stops after AMT/RATE hours; infusions of one drug that
  overlap add up.
* EVID 0: an observation: a clinic visit with all labs at TIME.
* EVID 2 (other event) is accepted and ignored; EVID 3 and 4 (state resets) are
  refused: every pulsehpg patient is independent and is never reset.

IDs are patients: the n-th distinct ID (in order of first appearance) is cohort
patient n-1. Rows of one ID need not be sorted. At equal times the order is the
regimen's documented order (visits, then doses).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from . import model

__all__ = ["DoseRecord", "read_dose_records", "patient_count", "expand_records",
           "infusion_rates"]

_DRUGS = tuple(d.name for d in model.DRUGS)
_COLUMNS = ("ID", "TIME", "AMT", "II", "ADDL", "RATE", "EVID")
MAX_ADDL = 100_000


@dataclass(frozen=True)
class DoseRecord:
    patient: int
    time: float
    evid: int
    drug: str = ""
    amount: float = 0.0
    rate: float = 0.0
    interval: float = 0.0
    additional: int = 0


def patient_count(records) -> int:
    """How many patients (distinct IDs) the records are of."""
    return len({r.patient for r in records})


def read_dose_records(path) -> tuple[DoseRecord, ...]:
    path = Path(path)
    try:
        return _read(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None


def _read(path: Path) -> tuple[DoseRecord, ...]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty file")
        cols = {c.strip().upper(): c for c in reader.fieldnames}
        missing = [c for c in ("ID", "TIME", "EVID") if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                             f"ID, TIME, DRUG (or CMT), AMT, II, ADDL, RATE, EVID")
        drug_col = cols.get("DRUG", cols.get("CMT"))
        ids: dict[str, int] = {}
        out = []
        for row in reader:
            line = reader.line_num
            header = (f"{len(reader.fieldnames)} fields of the header "
                      f"({', '.join(reader.fieldnames)})")
            if None in row:
                raise ValueError(f"{path}, line {line}: more fields than the {header}")
            if None in row.values():
                raise ValueError(f"{path}, line {line}: fewer fields than the {header}")

            def num(name, default=0.0, _row=row, _line=line):
                raw = _row.get(cols[name], "") if name in cols else ""
                raw = (raw or "").strip()
                if raw in ("", "."):
                    return default
                try:
                    v = float(raw)
                except ValueError:
                    raise ValueError(f"{path}, line {_line}: {name} must be a number, "
                                     f"got {raw!r}") from None
                if not math.isfinite(v):
                    raise ValueError(f"{path}, line {_line}: {name} must be finite, got {raw!r}")
                return v

            key = row[cols["ID"]].strip()
            if key in ("", "."):
                raise ValueError(f"{path}, line {line}: ID is empty")
            pid = ids.setdefault(key, len(ids))
            time, evid = num("TIME"), num("EVID")
            if not evid.is_integer():
                raise ValueError(f"{path}, line {line}: EVID must be 0, 1 or 2, got {evid:g}")
            evid = int(evid)
            if time < 0:
                raise ValueError(f"{path}, line {line}: TIME must be >= 0, got {time:g}")
            if evid in (3, 4):
                raise ValueError(f"{path}, line {line}: EVID {evid} (reset) is not supported: "
                                 f"pulsehpg patients are never reset; use one ID per patient")
            if evid not in (0, 1, 2):
                raise ValueError(f"{path}, line {line}: EVID must be 0, 1 or 2, got {evid}")
            if evid != 1:
                out.append(DoseRecord(pid, time, evid))
                continue
            drug = (row.get(drug_col, "") if drug_col else "").strip()
            if drug not in _DRUGS:
                raise ValueError(f"{path}, line {line}: unknown drug {drug!r}; allowed: "
                                 f"{', '.join(_DRUGS)}")
            amt, ii, addl, rate = num("AMT"), num("II"), num("ADDL"), num("RATE")
            if amt <= 0 or ii < 0 or addl < 0 or rate < 0 or not float(addl).is_integer():
                raise ValueError(f"{path}, line {line}: AMT must be > 0 and II, ADDL, RATE "
                                 f">= 0 (ADDL a whole number), got AMT={amt:g} II={ii:g} "
                                 f"ADDL={addl:g} RATE={rate:g}")
            if addl > MAX_ADDL:
                raise ValueError(f"{path}, line {line}: ADDL={addl:g} is more than {MAX_ADDL} "
                                 f"additional doses")
            if addl > 0 and ii <= 0:
                raise ValueError(f"{path}, line {line}: ADDL={addl:g} needs II > 0")
            out.append(DoseRecord(pid, time, 1, drug, amt, rate, ii, int(addl)))
    if not out:
        raise ValueError(f"{path}: no records")
    return tuple(out)


def expand_records(records) -> tuple[list, list]:
    """Explicit events: (time, kind, patient, drug, value) with kind 'dose',
    'infusion_start', 'infusion_stop' or 'visit'."""
    events, visits = [], []
    for r in records:
        if r.evid == 0:
            visits.append((r.time, r.patient))
        elif r.evid == 1:
            for k in range(r.additional + 1):
                t = r.time + k * r.interval
                if r.rate > 0:
                    events.append((t, "infusion_start", r.patient, r.drug, r.rate))
                    events.append((t + r.amount / r.rate, "infusion_stop", r.patient, r.drug,
                                   r.rate))
                else:
                    events.append((t, "dose", r.patient, r.drug, r.amount))
    return events, visits


def infusion_rates(events) -> list[tuple[float, int, str, float]]:
    """Total infusion rate of each patient and drug wherever it changes, from the
    'infusion_start' and 'infusion_stop' events of expand_records: (time, patient, drug,
    rate) in time order. Overlapping infusions of one drug add up; at one time the stops
    and starts are applied together, so back-to-back infusions hand over with one change,
    and the rate is summed afresh from the infusions running (no drift from adding and
    subtracting)."""
    changes = sorted((t, k == "infusion_start", p, d, v) for t, k, p, d, v in events
                     if k in ("infusion_start", "infusion_stop"))
    running: dict[tuple[int, str], Counter] = defaultdict(Counter)
    out = []
    for t, group in itertools.groupby(changes, key=lambda c: c[0]):
        touched = {}
        for _, starts, p, d, v in group:
            running[(p, d)][v] += 1 if starts else -1
            touched[(p, d)] = None
        for p, d in touched:
            # a start and its stop at one time (AMT/RATE below TIME's resolution) cancel
            total = math.fsum(r * c for r, c in running[(p, d)].items() if c > 0)
            out.append((t, p, d, total))
    return out
