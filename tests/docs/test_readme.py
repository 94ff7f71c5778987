"""The README's Python examples run as written (so the README stays true).

Blocks fenced as ```python run here; sketches that need a running server are fenced as ```py.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


def test_readme_python_examples_run():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in BLOCKS:
            exec(compile(block, str(README), "exec"), {})  # our own documentation
    assert printed.getvalue().split()[-1] == "588060"  # the royalty the README says the provider can claim
