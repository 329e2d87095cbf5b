"""Build the compiled core. Metadata lives in pyproject.toml.

PULSEHPG_DEBUG=1 turns Cython's bounds checks back on and builds without optimization.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("PULSEHPG_DEBUG") == "1"
openmp = [] if os.environ.get("PULSEHPG_NO_OPENMP") == "1" else ["-fopenmp"]
directives = {"language_level": 3, "boundscheck": debug, "wraparound": debug,
              "initializedcheck": debug, "cdivision": not debug}
ext = Extension(
    "pulsehpg._core",
    ["csrc/_core.pyx"],
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=(["-O0", "-g"] if debug else ["-O3"]) + openmp,
    extra_link_args=openmp,
)
setup(ext_modules=cythonize([ext], compiler_directives=directives))
