"""Type stub of the compiled core (csrc/_core.pyx); pulsehpg.Cohort is its only user."""

import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]
_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]

NS: int  # states
NP: int  # parameters
NI: int  # drug inputs (infusion rates, pumps)
ND: int  # derived per-patient quantities
NO: int  # observables
NF: int  # states in the fast loop
NAUX: int  # per-patient multirate bookkeeping
MAX_LEVELS: int  # step-ladder levels at most
NCOEF: int  # ETD coefficients per state and step size

def prepare(p: _F64, d: _F64, etab: _F64, h0: float, threads: int = 1) -> None: ...

class Engine:
    def __init__(self, y: _F64, p: _F64, d: _F64, u: _F64, etab: _F64, next_pulse: _F64,
                 since: _F64, tp: _F64, tc: _F64, aux: _F64, key: _U64, ctr: _U64,
                 pump_next: _F64, pump_dose: _F64, pump_interval: _F64, n_pulses: _I64,
                 n_steps: _I64, deterministic: bool, h0: float, growth: float,
                 coarse_step: float) -> None: ...
    def first_pulse(self, t: float) -> None: ...
    def advance(self, t1: float, samples: _F64, out: _F64, obs: npt.NDArray[np.intc],
                threads: int = 1, exact: bool = False, sample_coarse: bool = True) -> int: ...
    def sync(self, t: float, mask: npt.NDArray[np.uint8]) -> None: ...
    def observe(self, t: float, out: _F64) -> None: ...
    def states(self, t: float, out: _F64) -> None: ...
    def dose(self, t: float, drug: int, amount: _F64) -> None: ...

def patient_keys(root: int | np.uint64, index: _I64) -> _U64: ...
def normals(key: _U64, n: int, stream: int) -> _F64: ...
def uniforms(key: _U64, n: int, stream: int) -> _F64: ...

def lanes(mode: str | None = None) -> str: ...
