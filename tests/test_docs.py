"""The docs stand on their own: every Python example in the README runs, and nothing cites a file
outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), ns)


def _run_page(page: str) -> dict:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    assert blocks
    ns: dict = {}
    for block in blocks:
        exec(compile(block, page, "exec"), ns)
    return ns


def test_memorization_page_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_page("docs/memorization.md")


def test_diffusion_page_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(_run_page("docs/diffusion.md")["monitor"].f_mem()) == 4


def test_no_reference_outside_the_repository():
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("src/memdyn/**/*.py"), *ROOT.glob("tests/*.py"),
             *ROOT.glob("benchmarks/*.py")]
    bad = [str(f.relative_to(ROOT)) for f in files
           if f.name != "test_docs.py" and re.search(r"MODEL\.md|DESIGN\.md|\.\./shared", f.read_text())]
    assert not bad, bad


def test_model_page_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run_page("docs/model.md")["right"].shape == (3,)
