"""Build the compiled core. Metadata lives in pyproject.toml.

PULSEHPG_DEBUG=1 turns Cython's bounds checks back on and builds without optimization.
PULSEHPG_NATIVE=1 adds -march=native (about 15 % faster on the build machine; the binary
may not run on other CPUs, and FMA contraction changes results in the last bits).
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("PULSEHPG_DEBUG") == "1"
openmp = [] if os.environ.get("PULSEHPG_NO_OPENMP") == "1" else ["-fopenmp"]
native = ["-march=native"] if os.environ.get("PULSEHPG_NATIVE") == "1" else []
directives = {"language_level": 3, "boundscheck": debug, "wraparound": debug,
              "initializedcheck": debug, "cdivision": not debug}
ext = Extension(
    "pulsehpg._core",
    ["csrc/_core.pyx"],
    include_dirs=["csrc", numpy.get_include()],
    # no FMA contraction: the core's lanes of four patients must give each patient's
    # scalar result bit for bit (csrc/lanes.h), whatever the instruction set
    extra_compile_args=(["-O0", "-g"] if debug else ["-O3"] + native) + ["-ffp-contract=off"]
    + openmp,
    extra_link_args=openmp,
)
setup(ext_modules=cythonize([ext], compiler_directives=directives))
