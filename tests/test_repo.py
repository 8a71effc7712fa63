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
