"""The package's wings and the import rules between them (docs: "Layout").

settings is the light ground floor every wing stands on; training, planning, analysis and
paper each import settings and nothing of each other; only the command line (cli.py)
reaches every wing. The heavy libraries stay in the wings that need them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dropout_lab"
WINGS = ("settings", "training", "planning", "analysis", "paper")
# wing -> the wings it may import (besides itself)
MAY_IMPORT = {"settings": set(), "training": {"settings"}, "planning": {"settings"},
              "analysis": {"settings"}, "paper": {"settings"}}
# wing -> third-party libraries it must not import, not even inside a function
FORBIDDEN = {"settings": {"torch", "pandas", "matplotlib", "seaborn", "scipy", "statsmodels"},
             "planning": {"torch", "pandas", "matplotlib", "seaborn", "scipy", "statsmodels"},
             "paper": {"torch", "pandas", "matplotlib", "seaborn", "scipy", "statsmodels"},
             "analysis": {"torch"}, "training": {"pandas", "matplotlib", "seaborn"}}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _modules(wing: str) -> list[Path]:
    return sorted((PACKAGE / wing).glob("*.py"))


# The entry points: the modules the rules' shell commands run (python -m dropout_lab.NAME: a shell command is part
# of the rule code Snakemake fingerprints, so these names stay where finished results were made), and the
# documented single run (python -m dropout_lab.train).
ENTRY_POINTS = {"data": "training.data", "pack": "training.pack", "unpack": "training.unpack",
                "train": "training.train"}


def test_the_package_is_its_wings_the_command_line_and_the_workflows_entry_points():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == sorted(["__init__", "cli", *ENTRY_POINTS])
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(WINGS)


@pytest.mark.parametrize("name, target", ENTRY_POINTS.items())
def test_an_entry_point_only_hands_on_to_its_wing(name, target):
    imports = {n for n in _imports(PACKAGE / f"{name}.py") if n.startswith("dropout_lab")}
    assert {n.rsplit(".", 1)[0] for n in imports if n.count(".") == 3} <= {f"dropout_lab.{target}"}
    assert all(n.startswith(f"dropout_lab.{target}") for n in imports)
    assert (PACKAGE / f"{name}.py").read_text().count("\n") < 20


def test_the_rules_shell_commands_run_the_entry_points_by_their_pinned_names():
    rules = (PACKAGE.parents[1] / "workflow" / "rules")
    modules = set()
    for path in rules.glob("*.smk"):
        modules |= set(re.findall(r"python -m (dropout_lab[\w.]*)", path.read_text()))
    assert modules == {"dropout_lab.data", "dropout_lab.pack", "dropout_lab.unpack"}


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_imports_only_the_wings_below_it(wing):
    wrong = []
    for path in _modules(wing):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "dropout_lab" and len(parts) > 1 and parts[1] in WINGS:
                if parts[1] != wing and parts[1] not in MAY_IMPORT[wing]:
                    wrong.append(f"{path.name} imports {name}")
            elif parts[0] == "dropout_lab" and len(parts) > 1 and parts[1] == "cli":
                wrong.append(f"{path.name} imports the command line")
            if parts[0] in FORBIDDEN[wing]:
                wrong.append(f"{path.name} imports {parts[0]}")
    assert wrong == []


def test_the_light_wings_load_without_the_heavy_libraries():
    code = ("import sys\n"
            + "".join(f"import dropout_lab.{wing}.{path.stem}\n"
                      for wing in ("settings", "planning", "paper") for path in _modules(wing)
                      if path.stem != "__init__")
            + "heavy = sorted({'torch', 'pandas', 'matplotlib', 'scipy'} & set(sys.modules))\n"
            + "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


MODULE_LINES = 410  # about 400: a module read in one sitting
FUNCTION_LINES = 60


def test_no_module_or_function_is_too_long_to_read_in_one_sitting():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MODULE_LINES:
            long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name}: {length} lines")
    assert long == []
