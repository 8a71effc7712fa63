"""Execute the notebooks top to bottom, in quick or full mode, with this Python interpreter as the kernel.

Regenerate the committed notebooks with outputs from the real MiniLM runs (hours on a 2-core CPU; the
MiniLM victims must be built and, for 03, the records in benchmarks/results/ present)::

    .venv/bin/python notebooks/run_all.py --mode full

Quick mode (tiny victim, few steps; what the tests run) writes the executed copies elsewhere, so the
committed full-mode outputs stay untouched::

    .venv/bin/python notebooks/run_all.py --mode quick --out /tmp/notebooks

The mode reaches each notebook through the environment variable ``HEADPRUNE_NOTEBOOK_MODE``, read by
its cell tagged ``parameters`` (papermill users can override that cell's values instead).

Notebook 02 trains its own agent (1,024 MaskablePPO steps in full mode) unless
``HEADPRUNE_NOTEBOOK_AGENT_RUN`` names a finished run folder (``headprune train`` or
``benchmarks/train_agent.py``; a relative path is read from the folder this script runs in), whose learning
curves it then plots and whose policy it replays::

    HEADPRUNE_NOTEBOOK_AGENT_RUN=benchmarks/results/agents/minilm-syntactic_maskable_ppo_both_s0 \
        .venv/bin/python notebooks/run_all.py --mode full --only 02
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

__all__ = ["MODES", "NOTEBOOKS_DIR", "CurrentPythonKernelManager", "execute_notebook", "kernel_environment",
           "notebook_paths"]

NOTEBOOKS_DIR = Path(__file__).resolve().parent
MODES = ("quick", "full")
MODE_VARIABLE = "HEADPRUNE_NOTEBOOK_MODE"
AGENT_RUN_VARIABLE = "HEADPRUNE_NOTEBOOK_AGENT_RUN"


class CurrentPythonKernelManager(KernelManager):
    """An IPython kernel started with THIS interpreter (the venv's), whatever kernelspecs are installed."""

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name=f"Python {sys.version_info.major} ({sys.executable})", language="python",
            )
        return self._kernel_spec


def notebook_paths(only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks of ``notebooks/`` in order, or those whose names start with ``only``."""
    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [p for p in paths if any(p.name.startswith(o) for o in only)]
        missing = [o for o in only if not any(p.name.startswith(o) for p in paths)]
        if missing:
            raise ValueError(f"no notebook matches {missing}; notebooks: {[p.name for p in paths]}")
        return chosen
    return paths


def kernel_environment(mode: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: this process's, then ``env``, with ``mode`` in ``HEADPRUNE_NOTEBOOK_MODE``, one
    thread unless ``OMP_NUM_THREADS`` is set, the inline plot backend, and a relative
    ``HEADPRUNE_NOTEBOOK_AGENT_RUN`` made absolute from this process's working directory (the kernel runs in the
    notebook's folder, so a path typed from the repository root would not be found there)."""
    kernel_env = {**os.environ, **(env or {}), MODE_VARIABLE: mode}
    kernel_env.setdefault("OMP_NUM_THREADS", "1")
    kernel_env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    if kernel_env.get(AGENT_RUN_VARIABLE):
        kernel_env[AGENT_RUN_VARIABLE] = str(Path(kernel_env[AGENT_RUN_VARIABLE]).absolute())
    return kernel_env


def execute_notebook(path: str | os.PathLike[str], mode: str = "quick", out: str | os.PathLike[str] | None = None,
                     *, timeout: int = 1800, env: Mapping[str, str] | None = None) -> Any:
    """Run notebook ``path`` top to bottom in ``mode`` (its folder as the working directory) and write
    the executed notebook to ``out`` (default: over ``path``). Returns the executed notebook.

    Raises:
        ValueError: an unknown mode. nbclient's ``CellExecutionError`` names the failing cell.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    kernel_env = kernel_environment(mode, env)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            kernel_manager_class=CurrentPythonKernelManager,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=kernel_env)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    target = Path(out) if out is not None else path
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return nb


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=MODES, default="full")
    p.add_argument("--out", default=None, help="folder for the executed notebooks (default: overwrite in place)")
    p.add_argument("--only", nargs="+", default=None, help="name prefixes, e.g. 01 03")
    p.add_argument("--timeout", type=int, default=6 * 3600, help="seconds per cell")
    args = p.parse_args(argv)
    for path in notebook_paths(args.only):
        target = path if args.out is None else Path(args.out) / path.name
        start = time.perf_counter()
        print(f"[{args.mode}] {path.name} -> {target}", flush=True)
        execute_notebook(path, args.mode, target, timeout=args.timeout)
        print(f"[{args.mode}] {path.name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
