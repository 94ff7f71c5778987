"""The test suite's own layout: test modules live in folders by layer, share code only through the
``tests.helpers`` package (never by importing another test module or a conftest), and choose a chain
backend only with ``@pytest.mark.backend(...)``."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT_FILES = {"__init__.py", "conftest.py", "test_layout.py"}


def _python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def _imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an ``import`` or ``from … import`` reaches, relative ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            found += [
                (node.lineno, f"{base}.{alias.name}" if node.module else base + alias.name) for alias in node.names
            ]
    return found


def _allowed(module: str) -> bool:
    """A module of the tests package may be imported only if it is the helpers package or in it."""
    if module.startswith("."):
        return False  # relative imports hide which module is reached
    parts = module.split(".")
    return parts[0] != "tests" or parts[:2] == ["tests", "helpers"] or module == "tests"


def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path.relative_to(TESTS.parent)}:{line}: {module}"
                      for line, module in _imported_modules(tree) if not _allowed(module)]  # fmt: skip
    assert offenders == [], "import shared code from tests.helpers instead:\n" + "\n".join(offenders)


def test_the_layout_check_sees_the_imports_it_forbids():
    tree = ast.parse(
        "from tests.cli.test_cli import run_cli\nimport tests.conftest\nfrom tests import test_api\n"
        "from . import helpers\nfrom tests.helpers.cli import run_cli\nfrom tests.helpers import stack\nimport httpx\n"
    )
    verdicts = {module: _allowed(module) for _, module in _imported_modules(tree)}
    assert [module for module, ok in verdicts.items() if not ok] == [
        "tests.cli.test_cli", "tests.cli.test_cli.run_cli", "tests.conftest", "tests.test_api", ".", ".helpers",
    ]  # fmt: skip
    assert verdicts["tests.helpers.cli.run_cli"] and verdicts["tests.helpers.stack"] and verdicts["httpx"]


def test_test_modules_live_in_folders_and_helpers_hold_no_tests():
    loose = [p.name for p in TESTS.glob("*.py") if p.name not in ROOT_FILES]
    assert loose == [], f"move these into the folder of the layer they test (tests/<layer>/): {loose}"
    for path in (TESTS / "helpers").glob("*.py"):
        names = [n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not [n for n in names if n.startswith(("test_", "Test"))], path


def test_a_backend_is_chosen_only_with_the_backend_marker():
    """No test parametrizes ``session_chain`` itself or uses another marker for a backend: the ``chain``
    fixture's parametrization (conftest.py) reads ``@pytest.mark.backend``."""
    offenders = []
    for path in _python_files():
        if path.name == "conftest.py" and path.parent == TESTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "anvil" and ast.unparse(node) == "pytest.mark.anvil":
                offenders.append(f"{path.name}:{node.lineno}: pytest.mark.anvil")
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("mark.parametrize") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and "session_chain" in str(first.value):
                    offenders.append(f"{path.name}:{node.lineno}: parametrize('session_chain')")
    assert offenders == [], "use @pytest.mark.backend('embedded' | 'anvil'):\n" + "\n".join(offenders)
