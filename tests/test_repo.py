"""Repository contracts: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_two_commands_that_create_a_venv_and_pin_torch():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert command.startswith("python3 -m venv .venv")
        assert "torch==2.13.0" in command


def test_ci_runs_the_readme_test_command():
    test_command = _readme_commands()[1]
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_main_command_cleans_a_shipped_preset_with_options_the_parser_accepts():
    import shlex

    from headprune.cli import build_parser
    from headprune.victims import PRESETS

    main_command = _readme_commands()[0]
    cli = main_command.split("&& .venv/bin/headprune ", 1)[1]
    args = build_parser().parse_args(shlex.split(cli))
    assert args.command == "clean" and args.model in PRESETS
    assert args.eval_victim_test is not None and args.clean_data.endswith("sst2/clean/dev.tsv")


def test_package_layout_is_a_few_top_level_modules_and_argparse_only_in_the_cli():
    """``headprune/`` holds at most 8 modules at its top level (the rest are packages that name the pipeline's
    stages), and only the CLI package builds argument parsers."""
    package = ROOT / "headprune"
    top_level = sorted(p.name for p in package.glob("*.py"))
    assert len(top_level) <= 8, top_level
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        if not relative.startswith("cli/"):
            assert not re.search(r"^\s*(import argparse|from argparse import)", path.read_text(), re.M), relative


def test_every_module_imports_first():
    """Each module of the package imports as the FIRST headprune import of an interpreter (a user's
    ``from headprune.engine.finetuning import fine_tune``): an import cycle that only the package's usual import
    order hides fails here. One subprocess; headprune's modules are dropped from ``sys.modules`` before each."""
    import subprocess
    import sys

    script = (
        "import importlib, pkgutil, sys, headprune\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(headprune.__path__, 'headprune.'))\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'headprune' or m.startswith('headprune.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {type(err).__name__}: {err}')\n"
        "print(len(names), 'modules')\n"
        "sys.exit('\\n'.join(failed) if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[0]) > 50
