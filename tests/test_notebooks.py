"""Every notebook in notebooks/ runs top to bottom in quick mode (tiny victim, few steps), so a broken
notebook fails CI. The kernel is this interpreter (notebooks/run_all.py's kernel manager); the executed
copies go to a temp folder, the committed notebooks keep their full-mode outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("headprune_notebooks_run_all", NOTEBOOKS / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


RUN_ALL = _run_all()
PATHS = RUN_ALL.notebook_paths()


def test_the_three_notebooks_exist_with_a_parameters_cell():
    import nbformat

    assert [p.name for p in PATHS] == ["01_quickstart.ipynb", "02_train_agent.ipynb", "03_compare.ipynb"]
    for path in PATHS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert "HEADPRUNE_NOTEBOOK_MODE" in tagged[0].source


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_in_quick_mode(path: Path, tiny_victim, victim_cache: Path, tmp_path: Path):
    out = tmp_path / path.name
    nb = RUN_ALL.execute_notebook(path, "quick", out, timeout=600,
                                  env={"HEADPRUNE_CACHE": str(victim_cache),
                                       "HEADPRUNE_NOTEBOOK_LOGDIR": str(tmp_path / "logs")})
    assert out.is_file()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_unknown_mode_and_notebook_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        RUN_ALL.execute_notebook(PATHS[0], "medium", None)
    with pytest.raises(ValueError, match="no notebook matches"):
        RUN_ALL.notebook_paths(["99"])


def test_kernel_environment_makes_a_relative_agent_run_absolute(tmp_path: Path, monkeypatch):
    """The kernel runs in notebooks/: a run folder given relative to where run_all.py was started must reach it
    as an absolute path (it was read from notebooks/ and not found); an absolute one and the mode pass as given."""
    monkeypatch.chdir(tmp_path)
    env = RUN_ALL.kernel_environment("full", {"HEADPRUNE_NOTEBOOK_AGENT_RUN": "runs/agent"})
    assert env["HEADPRUNE_NOTEBOOK_AGENT_RUN"] == str(tmp_path / "runs" / "agent")
    assert env["HEADPRUNE_NOTEBOOK_MODE"] == "full"
    absolute = str(tmp_path / "elsewhere")
    assert RUN_ALL.kernel_environment("quick", {"HEADPRUNE_NOTEBOOK_AGENT_RUN": absolute})[
        "HEADPRUNE_NOTEBOOK_AGENT_RUN"] == absolute
    monkeypatch.delenv("HEADPRUNE_NOTEBOOK_AGENT_RUN", raising=False)
    assert "HEADPRUNE_NOTEBOOK_AGENT_RUN" not in RUN_ALL.kernel_environment("quick")


def test_compare_notebook_full_mode_reads_only_the_committed_records(tmp_path: Path):
    """Full mode of 03 plots the committed records and builds nothing: with an empty victim cache it runs in
    seconds, and its gap-to-floor table names the four SST-2 attacks and the defenses of issue 22."""
    path = next(p for p in PATHS if p.name.startswith("03"))
    cache = tmp_path / "empty_cache"
    cache.mkdir()
    nb = RUN_ALL.execute_notebook(path, "full", tmp_path / path.name, timeout=300,
                                  env={"HEADPRUNE_CACHE": str(cache)})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert list(cache.iterdir()) == []  # nothing built or downloaded
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    for name in ("syntactic (floor", "style (floor", "BadNets (floor", "AddSent (floor", "| finemix |", "| distill |",
                 "| FTH |", "| layerwise |", "probe: finemix → distill"):
        assert name in markdown, name
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
