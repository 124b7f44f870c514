"""The docs stand on their own and say what their code does: every Python example in the README and
docs/ runs, every value an example says it prints is compared with what it prints, and nothing cites
a file outside the repository.

How an example states what it prints: a comment ``# prints: EXPECTED`` on the ``print(...)`` call
(or on the line right after it), optionally ending in a tolerance, ``(±0.01, why)`` or
``(within 5 %, why)``. Numbers are compared within that tolerance, or by default within half a unit
of the last digit written (``0.340`` means 0.3395 to 0.3405); every other word must match exactly.
"""

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.md"))]
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"{_NUMBER}|[A-Za-z_]\w*|\S")
_TOL = re.compile(r"\s*\((?:±|\+-)\s*(" + _NUMBER + r")[^)]*\)\s*$|\s*\(within\s+(" + _NUMBER + r")\s*%[^)]*\)\s*$")


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


def _expectations(code: str) -> list[tuple[int, int, str]]:
    """(first line, last line, expected text) of every print call that says what it prints."""
    calls = [(n.lineno, n.end_lineno) for n in ast.walk(ast.parse(code))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT and "prints:" in tok.string:
            line = tok.start[0]
            span = [c for c in calls if c[0] <= line <= c[1]] or [c for c in calls if c[1] == line - 1]
            assert len(span) == 1, f"'# prints:' on line {line} belongs to no print call: {tok.string}"
            out.append((*span[0], tok.string.split("prints:", 1)[1].strip()))
    return out


def _matches(expected: str, got: str) -> str | None:
    """None when ``got`` is what ``expected`` says, else why not."""
    tol = _TOL.search(expected)
    absolute = relative = None
    if tol:
        absolute = float(tol.group(1)) if tol.group(1) else None
        relative = float(tol.group(2)) / 100 if tol.group(2) else None
        expected = expected[: tol.start()]
    want, have = _TOKEN.findall(expected), _TOKEN.findall(got)
    if len(want) != len(have):
        return f"{len(have)} words printed, {len(want)} expected"
    for w, h in zip(want, have):
        if re.fullmatch(_NUMBER, w):
            if not re.fullmatch(_NUMBER, h):
                return f"{h!r} printed where the number {w} is expected"
            x, y = float(w), float(h)
            if absolute is not None:
                allowed = absolute
            elif relative is not None:
                allowed = relative * abs(x)
            else:
                digits = len(w.split(".")[1]) if "." in w and "e" not in w.lower() else 0
                allowed = 0.5 * 10.0**-digits
            if not abs(x - y) <= allowed * (1 + 1e-9):
                return f"{h} printed, {w} expected (allowed difference {allowed:g})"
        elif w != h:
            return f"{h!r} printed where {w!r} is expected"
    return None


def _run_page(page: str, blocks: list[str] | None = None) -> dict:
    """Run a page's examples (or ``blocks``) in one namespace; check what they say they print. Returns
    the namespace."""
    ns: dict = {}
    for code in _blocks(page) if blocks is None else blocks:
        expect = _expectations(code)
        printed: list[tuple[int, str]] = []

        def record(*args, sep=" ", end="\n", file=None, flush=False):
            text = sep.join(map(str, args))
            if file is None:
                printed.append((sys._getframe(1).f_lineno, text))
            print(text, end=end, file=file, flush=flush)

        ns["print"] = record
        exec(compile(code, page, "exec"), ns)
        for first, last, want in expect:
            got = [t for line, t in printed if first <= line <= last]
            assert len(got) == 1, f"{page}: the print on lines {first}-{last} ran {len(got)} times"
            why = _matches(want, got[0])
            assert why is None, f"{page}, print on line {first}: {why}\n  says:    {want}\n  printed: {got[0]}"
    return ns


def test_expected_output_matching():
    assert _matches("0.3401 [0.3400] False", "0.34005286 [0.3400333] False") is None
    assert _matches("0.3400 [0.3400] False", "0.34005286 [0.3400333] False") is not None  # beyond half a unit
    assert _matches("[0.934 0.066] (±0.01, 3 se)", "[0.94 0.06]") is None
    assert _matches("42 (±12)", "55") is not None
    assert _matches("1620 steps (within 10 %)", "1700 steps") is None
    assert _matches("True", "False") is not None and _matches("a b", "a") is not None
    assert _expectations("x = 1\nprint(x)  # prints: 1\nprint(\n  2)\n# prints: 2\n") == [(2, 2, "1"), (3, 4, "2")]


def test_a_page_that_misstates_its_output_fails():
    _run_page("example", ["x = 2\nprint(x + 1)  # prints: 3\n"])
    with pytest.raises(AssertionError, match="4 printed, 3 expected"):
        _run_page("example", ["x = 3\nprint(x + 1)  # prints: 3\n"])
    with pytest.raises(AssertionError, match="ran 0 times"):
        _run_page("example", ["if False:\n    print(1)  # prints: 1\n"])


def test_docs_examples_say_what_they_print():
    assert sum(len(_expectations(code)) for page in PAGES for code in _blocks(page)) >= 7


#: what a page's examples leave behind, checked beyond what they print
AFTER = {"docs/model.md": lambda ns: ns["right"].shape == (3,),
         "docs/diffusion.md": lambda ns: len(ns["monitor"].f_mem()) == 4}


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)])
def test_page_examples_run_and_print_what_they_say(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = _run_page(page)
    assert AFTER.get(page, lambda ns: True)(ns)


def test_no_reference_outside_the_repository():
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("src/memdyn/**/*.py"), *ROOT.glob("tests/*.py"),
             *ROOT.glob("benchmarks/*.py")]
    bad = [str(f.relative_to(ROOT)) for f in files
           if f.name != "test_docs.py" and re.search(r"MODEL\.md|DESIGN\.md|\.\./shared", f.read_text())]
    assert not bad, bad
