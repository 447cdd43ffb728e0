"""The layers, checked on the source: bot/ and training/ build on feedback/ and neither imports
the other; feedback/ imports neither; the chat process (bot/app.py and all it imports) never
imports torch, TRL or the other training libraries. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

from support.services import ROOT

PACKAGES = ("bot", "feedback", "training", "demo", "sim", "launcher")
TRAINING_LIBRARIES = {"torch", "trl", "peft", "transformers", "datasets", "accelerate"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def package_imports(package: str) -> set[str]:
    return {name for path in (ROOT / package).rglob("*.py") for name in imports_of(path)}


def test_packages_import_only_the_layers_below() -> None:
    """feedback <- bot, training <- demo <- sim <- launcher (the CLI, on top); nothing installed
    imports the tests, their support package or the benchmarks."""
    outside = {"tests", "support", "bench"}
    forbidden = {
        "feedback": {"bot", "training", "launcher", "sim", "demo"} | outside,
        "bot": {"training", "launcher", "sim", "demo"} | outside,
        "training": {"bot", "launcher", "sim", "demo"} | outside,
        "demo": {"bot", "launcher", "sim"} | outside,
        "sim": {"bot", "launcher"} | outside,
        "launcher": outside,
    }
    for package, others in forbidden.items():
        wrong = sorted(name for name in package_imports(package) if name.split(".")[0] in others)
        assert not wrong, f"{package}/ imports {wrong}"


def test_the_installed_packages_are_the_product_and_not_its_harness() -> None:
    """pyproject's package list: the product's packages; tests, support and bench (the experiment
    harness with its plots and report writer) stay in the repository."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(name.rstrip("*") for name in include) == sorted(PACKAGES)


def test_the_chat_process_never_imports_the_training_libraries() -> None:
    """Everything bot/app.py reaches through our own modules, transitively."""
    seen: set[str] = set()
    third_party: set[str] = set()
    todo = ["bot.app"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        for imported in imports_of(path):
            top = imported.split(".")[0]
            if top in PACKAGES:
                todo.append(imported)
            else:
                third_party.add(top)
    assert "feedback.store" in seen and "bot.edge" in seen  # the walk did follow our imports
    assert not third_party & TRAINING_LIBRARIES, sorted(third_party & TRAINING_LIBRARIES)
    assert not {m for m in seen if m.split(".")[0] in ("training", "sim", "launcher")}
