"""What a clinic measures: observables with assay noise and semen-analysis sampling.

Noise for visit k of a patient comes from a side stream of the patient's key, so
labs are reproducible and independent of batch size or order of visits.
"""

from __future__ import annotations

import numpy as np

from . import _core
from .params import REGISTRY

__all__ = ["LAB_TESTS", "measure"]

_IDX = {p.sym: i for i, p in enumerate(REGISTRY)}
# lab name -> (observable, CV parameter)
_ASSAYS = {
    "lh": ("lh", "cv_lh"),
    "fsh": ("fsh", "cv_fsh"),
    "t_total": ("t_total", "cv_t"),
    "t_free": ("t_free", "cv_t"),
    "e2": ("e2", "cv_e2"),
    "inhibin_b": ("inhibin_b", "cv_inh"),
}
LAB_TESTS = tuple(_ASSAYS) + ("semen",)
SEMEN_VALUES = ("sperm_conc", "motility")  # what a semen analysis reports
LAB_VALUES = tuple(_ASSAYS) + SEMEN_VALUES  # every value a visit can report


def values_of(tests) -> set[str]:
    """The lab values a visit drawing these tests reports."""
    return {v for t in tests for v in (SEMEN_VALUES if t == "semen" else (t,))}


_STREAM_BASE = 1 << 32  # side streams 2^32 + visit, apart from the variability stream


def measure(obs: dict[str, np.ndarray], params: np.ndarray, keys: np.ndarray, visit: int,
            tests=LAB_TESTS) -> dict[str, np.ndarray]:
    """Measured values for one visit.

    ``obs`` are true observables (Cohort.observe()), ``params`` the cohort's
    parameter matrix (registry units). Semen analysis returns ``sperm_conc``
    (0 when no sperm is seen: azoospermia) and ``motility`` (NaN when azoospermic).
    """
    z = _core.normals(keys, 8, _STREAM_BASE + 2 * visit)
    u = _core.uniforms(keys, 2, _STREAM_BASE + 2 * visit + 1)
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(_ASSAYS):
        if name in tests:
            obs_name, cv_sym = _ASSAYS[name]
            sig = np.sqrt(np.log1p(params[:, _IDX[cv_sym]] ** 2))
            out[name] = obs[obs_name] * np.exp(sig * z[:, k] - 0.5 * sig**2)
    if "semen" in tests:
        sig = np.sqrt(np.log1p(params[:, _IDX["cv_semen"]] ** 2))
        conc = obs["sperm_conc"] * np.exp(sig * z[:, 6] - 0.5 * sig**2)
        expected = conc * 1e6 * params[:, _IDX["v_semen"]]  # sperm in the searched volume
        seen = u[:, 0] >= np.exp(-expected)  # P(no sperm seen) = exp(-expected)
        out["sperm_conc"] = np.where(seen, conc, 0.0)
        mot = obs["motility"] + params[:, _IDX["sd_mot"]] * z[:, 7]
        out["motility"] = np.where(seen, np.clip(mot, 0.0, 100.0), np.nan)
    return out
