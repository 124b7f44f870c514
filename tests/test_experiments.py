"""Each experiment's --quick form: all claims hold, tables have no NaN, figures are written."""

import json

import pandas as pd
import pytest

from memdyn.claims import ID_PATTERN
from memdyn.practice import comparisons
from memdyn.runner import run_suite


# longest first, so that parallel workers (pytest -n) do not wait on it at the end
@pytest.mark.parametrize("name", ["self-consuming", "diffusion-episodes", "memorization", "diffusion-tau-mem",
                                  "quasipotential", "exit-times", "noise-mitigation", "double-descent", "gibbs",
                                  "collapse", "degeneration", "noise-geometry", "three-wells", "refit"])
def test_quick_experiment_claims_hold(tmp_path, name):
    summary = run_suite([name], tmp_path / "run", quick=True, seed=1)
    assert not summary.errors
    failing = [c["name"] for c in summary.claims if not c["holds"]]
    assert summary.claims and not failing, failing
    res = json.loads((tmp_path / f"run/{name}/results.json").read_text())
    ids = [c["id"] for c in res["claims"]]  # stable ids, unique within the experiment
    assert len(set(ids)) == len(ids) and all(ID_PATTERN.fullmatch(i) for i in ids), ids
    comparisons(summary.claims)  # every id the theory-vs-practice rows need from it is there (raises otherwise)
    for t in res["tables"]:
        df = pd.read_parquet(tmp_path / "run" / t)
        plain = [c for c in df.columns if not pd.api.types.is_extension_array_dtype(df[c].dtype)]
        assert not df[plain].isna().any().any()  # NA only in nullable columns, where missing by design
    for f in res["figures"]:
        assert (tmp_path / "run" / f["file"]).stat().st_size > 10_000 and f["caption"]
    # cells keep reduced observables, compressed, not trajectories: a run directory stays small
    size = sum(p.stat().st_size for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert size < 5e6, f"{size / 1e6:.1f} MB"


def test_default_run_links_latest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = run_suite(["timescales"], None, quick=True, sets=["chains=200", "relax=5"], runs_dir="runs")
    latest = tmp_path / "runs/latest"
    assert latest.is_symlink() and latest.resolve() == summary.out.resolve()
    assert (latest / "report.html").exists()
