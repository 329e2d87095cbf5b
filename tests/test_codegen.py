"""The committed C header is what the code generator makes from the model."""

import difflib
from pathlib import Path

from pulsehpg import _core, codegen

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "model_gen.h"


def test_committed_header_is_current():
    committed = HEADER.read_text()
    generated = codegen.c_header()
    if committed != generated:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(keepends=True), generated.splitlines(keepends=True),
            "csrc/model_gen.h (committed)", "codegen.c_header()"))[:60])
        raise AssertionError(
            "csrc/model_gen.h is stale: run `python -m pulsehpg.codegen`, rebuild "
            "(pip install -e .) and commit the header\n" + diff)


def test_compiled_core_matches_layout():
    """The imported extension was built from a header with the current dimensions."""
    layout = codegen.LAYOUT
    assert _core.NS == len(layout.states)
    assert _core.NP == len(layout.params)
    assert _core.NI == len(layout.inputs)
    assert _core.ND == layout.n_derived
    assert _core.NO == len(layout.outputs)
