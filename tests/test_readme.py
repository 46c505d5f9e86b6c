"""The README's Python examples run, and print what their comments say.

Each ```python block of README.md is executed in a fresh namespace in a temporary
directory (they write files such as ``iris-ep`` and ``loop.png``); the sweep example (144
training runs, covered by the sweep and CLI tests) is skipped. A ``print(...)  # values``
line must print those values: numbers are compared to the digits the comment shows
(half a unit in their last significant digit, at least 1e-6 relative).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _tolerance(token: str) -> float:
    """Half a unit in the last significant digit ``token`` shows, at least 1e-6 relative."""
    mantissa, _, exponent = token.lower().lstrip("+-").partition("e")
    digits = mantissa.replace(".", "").lstrip("0") or "0"
    value = abs(float(token))
    if value == 0.0:
        return 1e-12
    scale = 10.0 ** (math.floor(math.log10(value)) - len(digits) + 1)
    return max(0.51 * scale, 1e-6 * value)


def _expectations(block: str) -> list[list[str]]:
    """The numbers each commented print line promises, in the order the prints run."""
    out = []
    for line in block.splitlines():
        if line.lstrip().startswith("print(") and "#" in line:
            comment = line.split("#", 1)[1].strip()
            # the values: a bracketed array, else the first word (words after them explain)
            head = comment[:comment.index("]") + 1] if comment.startswith("[") else comment.split()[0]
            numbers = _NUMBER.findall(head)
            out.append(numbers if numbers and not re.search(r"[a-df-zA-DF-Z]", head) else [])
        elif line.lstrip().startswith("print("):
            out.append([])
    return out


@pytest.mark.parametrize("k", range(len(_BLOCKS)))
def test_readme_example_runs_and_prints_what_it_says(k, tmp_path, monkeypatch):
    block = _BLOCKS[k]
    if "run_sweep(" in block:
        pytest.skip("the sweep example runs 144 trainings (the sweep and CLI tests cover it)")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, f"README.md python block {k}", "exec"), {"__name__": f"readme_block_{k}"})
    lines = printed.getvalue().splitlines()
    expected = _expectations(block)
    assert len(lines) >= len(expected), f"block {k}: {len(lines)} lines printed, {len(expected)} prints"
    checked = 0
    for want, line in zip(expected, lines):
        if not want:
            continue
        got = _NUMBER.findall(line)
        assert len(got) == len(want), f"block {k}: printed {line!r}, README says {' '.join(want)}"
        for g, w in zip(got, want):
            assert abs(float(g) - float(w)) <= _tolerance(w), \
                f"block {k}: printed {line!r}, README says {' '.join(want)}"
        checked += 1
    assert checked or not any(expected), f"block {k}: no commented print checked"
