"""Keeps the import arrows of ARCHITECTURE.md true (the import-direction check CI runs)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "bots", "adapters", "generation", "scheduler", "chorus")
# The composition root: it alone imports everything, and adapters, scheduler and the engines only lazily.
ROOT_PACKAGE = "chorus"
PLATFORM_LIBS = {"discord", "slack_bolt", "slack_sdk"}
MODEL_LIBS = {"torch", "transformers", "accelerate", "gguf", "safetensors"}
# generation modules that bots, adapters and scheduler may import: pure Python, no model libraries.
LIGHT_GENERATION = {
    "generation",
    "generation.types",
    "generation.moderation",
    "generation.prompts",
    "generation.text",
    "generation.scorecard",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks count as top level
        if isinstance(node, ast.If):
            top_level.update(id(child) for child in node.body)
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name, id(node) in top_level) for name in [node.module, *names]]
    return found


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _violations(path: Path) -> list[str]:
    module = _module_name(path)
    owner = module.split(".")[0]
    problems = []
    for name, top in _imports(path):
        root = name.split(".")[0]
        if owner == "config" and root in PACKAGES and root != "config":
            problems.append(f"config must not import {name}")
        if root in PLATFORM_LIBS and owner != "adapters":
            problems.append(f"only adapters import {root} (found {name})")
        if root == "apscheduler" and owner != "scheduler":
            problems.append("only scheduler imports apscheduler")
        if root in MODEL_LIBS and (owner != "generation" or module in LIGHT_GENERATION or top):
            problems.append(f"{root} may only be imported lazily, inside generation's engine modules")
        if root == ROOT_PACKAGE and owner != ROOT_PACKAGE and not (module == "bots.cli" and not top):
            problems.append(f"only the composition root imports {ROOT_PACKAGE} ({name})")
        if owner == ROOT_PACKAGE:
            if top and (root in {"adapters", "scheduler"} or _is_engine(name)):
                problems.append(f"the composition root imports {name} lazily, only when configured")
            continue
        if owner == "generation" and root in {"bots", "adapters", "scheduler"}:
            problems.append(f"generation must not import {name}")
        if owner in {"bots", "adapters", "scheduler"} and _is_engine(name):
            target = ".".join(name.split(".")[:2])
            problems.append(f"{owner} may import only {sorted(LIGHT_GENERATION)} from generation, not {target}")
        if owner == "bots" and root in {"adapters", "scheduler"}:
            problems.append(f"bots never import {root} ({name}); the composition root installs them")
        if owner == "scheduler" and root == "adapters":
            problems.append("scheduler posts through the Publisher protocol, never adapters")
        if owner == "adapters" and root == "adapters":
            mine, theirs = module.split(".")[1:2], name.split(".")[1:2]
            if mine and theirs and mine != theirs:
                problems.append(f"adapters never import each other ({module} imports {name})")
    return [f"{path.relative_to(ROOT)}: {problem}" for problem in problems]


def _is_engine(name: str) -> bool:
    """A generation module beyond the light ones (the engines, model loading, serve)."""
    if not name.startswith("generation."):
        return False
    target = ".".join(name.split(".")[:2])
    return target not in LIGHT_GENERATION and _is_module(target)


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def test_imports_point_the_way_architecture_md_says() -> None:
    problems = [problem for path in _sources() for problem in _violations(path)]
    assert problems == []


def test_the_checker_catches_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path
    (fake_root / "bots").mkdir()
    (fake_root / "generation").mkdir()
    (fake_root / "generation" / "local.py").write_text("")
    bad = fake_root / "bots" / "bad.py"
    bad.write_text(
        "import torch\nimport adapters.terminal\nimport scheduler.service\nimport chorus.compose\n"
        "from generation.local import LocalGenerator\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    problems = _violations(bad)
    assert any("torch" in p for p in problems)
    assert any("never import adapters" in p for p in problems)
    assert any("generation.local" in p for p in problems)
    assert any("never import scheduler" in p for p in problems)
    (fake_root / "chorus").mkdir()
    eager_root = fake_root / "chorus" / "compose.py"
    eager_root.write_text("import adapters.discord.app\n\ndef run():\n    import scheduler.plugin\n")
    assert [p for p in _violations(eager_root) if "lazily" in p] == [
        "chorus/compose.py: the composition root imports adapters.discord.app lazily, only when configured"
    ]
    assert any("only the composition root imports chorus" in p for p in problems)


def test_core_imports_load_no_model_or_platform_library() -> None:
    code = (
        "import sys, bots.app, chorus.cli, chorus.compose, adapters.terminal.app, generation.types, generation.fake;"
        "heavy = ('torch', 'transformers', 'discord', 'slack_bolt', 'apscheduler');"
        "heavy = sorted(m for m in heavy if m in sys.modules);"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
