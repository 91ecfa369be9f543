"""The suite's own habits, read from its source: each check failed on the tests it now guards.

- every ``pytest.raises`` says which error it expects: a ``match=`` on the message, or the
  error bound with ``as NAME`` and NAME read by a later assertion of the same test (a bare one
  passes on any error of the class, a typo included);
- no Hypothesis ``deadline`` other than None: a loaded machine makes a test slower, never red;
- no assertion of a duration or a rate: speed is measured by ``scripts/bench``, not asserted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _is_pytest_raises(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "raises"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pytest"
    )


def _names(node: ast.AST) -> set[str]:
    return {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}


def _asserted_names(function: ast.AST) -> set[str]:
    """The names an assertion reads, directly or through ``x = ...name...`` assignments."""
    asserted = set().union(
        *(_names(c.test) for c in ast.walk(function) if isinstance(c, ast.Assert))
    )
    assignments = [
        (set().union(*(_names(t) for t in node.targets)), _names(node.value))
        for node in ast.walk(function)
        if isinstance(node, ast.Assign)
    ]
    grew = True
    while grew:
        grew = False
        for targets, read in assignments:
            if targets & asserted and not read <= asserted:
                asserted |= read
                grew = True
    return asserted


def bare_raises(source: str) -> list[int]:
    """The lines of ``pytest.raises`` that check nothing about the error they catch."""
    tree = ast.parse(source)
    bare = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        asserted = _asserted_names(function)
        for node in ast.walk(function):
            if not isinstance(node, (ast.With, ast.AsyncWith)):
                continue
            for item in node.items:
                call = item.context_expr
                if not _is_pytest_raises(call):
                    continue
                assert isinstance(call, ast.Call)
                if any(k.arg == "match" for k in call.keywords):
                    continue
                bound = item.optional_vars
                if isinstance(bound, ast.Name) and bound.id in asserted:
                    continue
                bare.append(call.lineno)
    return bare


def deadlines(source: str) -> list[int]:
    """The lines that give Hypothesis a deadline other than None."""
    return [
        node.value.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.keyword)
        and node.arg == "deadline"
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    ]


def _where(check, paths=SOURCES) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{p.relative_to(TESTS)}:{line}" for p in paths for line in check(p.read_text())]


def test_every_pytest_raises_checks_the_error_it_catches() -> None:
    assert _where(bare_raises) == []


def test_no_hypothesis_test_has_a_deadline() -> None:
    assert _where(deadlines) == []


# -- the checks themselves ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def test_a():\n    with pytest.raises(ValueError):\n        f()\n", [2]),
        ("def test_a():\n    with pytest.raises(ValueError, match='x'):\n        f()\n", []),
        # bound, but nothing reads it
        ("def test_a():\n    with pytest.raises(ValueError) as e:\n        f()\n", [2]),
        (
            "def test_a():\n    with pytest.raises(ValueError) as e:\n        f()\n    print(e)\n",
            [2],
        ),
        (
            "def test_a():\n    with pytest.raises(ValueError) as e:\n        f()\n"
            "    assert 'x' in str(e.value)\n",
            [],
        ),
        # read through a name of its own
        (
            "def test_a():\n    with pytest.raises(ValueError) as e:\n        f()\n"
            "    message = str(e.value)\n    assert 'x' in message\n",
            [],
        ),
        (
            "def test_a():\n    with pytest.raises(ValueError) as e:\n        f()\n"
            "    message = str(e.value)\n    print(message)\n",
            [2],
        ),
        # two in one statement, one of them bare
        (
            "def test_a():\n    with pytest.raises(A, match='a'), pytest.raises(B):\n        f()\n",
            [2],
        ),
        ("def test_a():\n    with other.raises(ValueError):\n        f()\n", []),
    ],
)
def test_what_counts_as_a_bare_raises(source: str, expected: list[int]) -> None:
    assert bare_raises(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("@settings(deadline=None)\ndef test_a(): pass\n", []),
        ("@settings(deadline=200)\ndef test_a(): pass\n", [1]),
        ("@settings(max_examples=5,\n  deadline=timedelta(ms=5))\ndef test_a(): pass\n", [2]),
    ],
)
def test_what_counts_as_a_deadline(source: str, expected: list[int]) -> None:
    assert deadlines(source) == expected
