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
           "open_results", "__version__"]


def __getattr__(name):
    # open_results needs xarray (pip install 'pulsehpg[results]'); import it on first use.
    # Without xarray, calling it raises ImportError naming that command.
    if name == "open_results":
        from .results import open_results

        return open_results
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
