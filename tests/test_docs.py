"""docs/parameters.md is generated from the registry and must be kept current."""

import difflib
from pathlib import Path

from pulsehpg.cli import params_markdown
from pulsehpg.params import REGISTRY

DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"


def test_parameters_md_is_current():
    committed = DOC.read_text()
    generated = params_markdown()
    if committed != generated:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(keepends=True), generated.splitlines(keepends=True),
            "docs/parameters.md (committed)", "generated"))[:60])
        raise AssertionError(
            "docs/parameters.md is stale: regenerate it with "
            "`pulsehpg params --format markdown > docs/parameters.md`\n" + diff)


def test_parameters_md_names_every_parameter():
    text = params_markdown()
    for p in REGISTRY:
        assert f"| `{p.name}` | `{p.sym}` |" in text
