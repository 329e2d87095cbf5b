"""pulsehpg: the male hypothalamic-pituitary-gonadal axis, pulse by pulse, for cohorts."""

from .cohort import DRUG_NAMES, OBSERVABLES, Cohort, Numerics
from .params import REGISTRY
from .phenotypes import PHENOTYPES
from .run import RunResult, run
from .scenario import Scenario, ScenarioError, load_scenario
from .sweep import sweep

__version__ = "0.1.0"
__all__ = ["Cohort", "Numerics", "DRUG_NAMES", "OBSERVABLES", "PHENOTYPES", "REGISTRY",
           "RunResult", "Scenario", "ScenarioError", "load_scenario", "run", "sweep",
           "__version__"]
