"""Each experiment's --quick form: all claims hold, tables have no NaN, figures are written."""

import json

import numpy as np
import pandas as pd
import pytest

from memdyn.claims import ID_PATTERN
from memdyn.experiments import ConfigError
from memdyn.practice import comparisons
from memdyn.runner import run_suite


# longest first, so that parallel workers (pytest -n) do not wait on it at the end
@pytest.mark.parametrize("name", ["memorization", "quasipotential", "exit-times", "noise-mitigation", "hysteresis",
                                  "double-descent", "gibbs",
                                  "collapse", "degeneration", "noise-geometry", "three-wells", "refit",
                                  "diffusion-calibration"])
def test_quick_experiment_claims_hold(tmp_path, name):
    summary = run_suite([name], tmp_path / "run", quick=True, seed=1)
    assert not summary.errors
    # findings (the theory tested on a real model) included: their verdicts at this seed are pinned here, so a
    # sign error in a real-model claim fails the test even though it would not fail `memdyn run`
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


def test_workers_run_experiments_at_once_with_the_results_of_one_after_another(tmp_path):
    """--workers 2: two experiments in two processes give the numbers of the serial run (torch's threads are set
    by the experiment's config, not by how it was launched)."""
    sets = ["timescales.chains=200", "timescales.relax=5", "diffusion-tau-mem.ns=[8,12,16,24]",
            "diffusion-tau-mem.seeds=2", "diffusion-tau-mem.width=32", "diffusion-tau-mem.probes=8",
            "diffusion-tau-mem.held_out=200", "diffusion-tau-mem.sample_steps=3", "diffusion-tau-mem.batches=[16]",
            "diffusion-tau-mem.lr=0.003"]
    names = ["timescales", "diffusion-tau-mem"]
    both = run_suite(names, tmp_path / "both", quick=True, sets=sets, seed=11, workers=2, progress=False)
    serial = run_suite(names, tmp_path / "serial", quick=True, sets=sets, seed=11, progress=False)
    assert not both.errors and not serial.errors
    assert [c["experiment"] for c in both.claims] == [c["experiment"] for c in serial.claims]
    for a, b in zip(both.claims, serial.claims):
        assert (a["id"], a["measured"], a["se"], a["holds"]) == (b["id"], b["measured"], b["se"], b["holds"])
    with pytest.raises(ConfigError, match="workers=0"):
        run_suite(names, tmp_path / "x", quick=True, sets=sets, workers=0)
    with pytest.raises(ConfigError, match="threads"):
        run_suite(["diffusion-tau-mem"], tmp_path / "y", quick=True, sets=["threads=0"])


def test_diffusion_temperature_runs_end_to_end_at_a_tiny_size(tmp_path):
    """The SGD-temperature experiment's pipeline on a tiny grid (its quick form runs in the default suite):
    every setting measured, the checks and form claims present with ids, the report's rows built."""
    sets = ["diffusion-temperature.lrs=[0.02,0.05,0.1,0.2]", "diffusion-temperature.adam=true",
            "diffusion-temperature.form_test=true", "diffusion-temperature.min_exits=2", "diffusion-temperature.width=16",
            "diffusion-temperature.replicates=2", "diffusion-temperature.probes=6", "diffusion-temperature.n=4",
            "diffusion-temperature.pretrain_time=150", "diffusion-temperature.burn_time=2",
            "diffusion-temperature.window_time=13", "diffusion-temperature.sample_steps=3"]
    summary = run_suite(["diffusion-temperature"], tmp_path / "run", quick=False, sets=sets, seed=3)
    assert not summary.errors
    res = json.loads((tmp_path / "run/diffusion-temperature/results.json").read_text())
    ids = [c["id"] for c in res["claims"]]
    assert len(set(ids)) == len(ids) and all(ID_PATTERN.fullmatch(i) for i in ids)
    for opt in ("sgd", "adam"):
        assert sum(i.startswith(f"settled@opt={opt},") for i in ids) == 12
        assert {f"resolution@opt={opt}", f"direction@opt={opt}", f"arrhenius-form@opt={opt}"} <= set(ids)
        assert any(i.startswith(f"collapse@opt={opt},") for i in ids)
    tab = pd.read_parquet(tmp_path / "run/diffusion-temperature/tables/settings.parquet")
    assert len(tab) == 24 and set(tab["batch"]) == {4, 8, 16}
    # the kinetic model: fitted at the setting the rule fixes (ln(B/lr) nearest the grid's middle; larger lr on a
    # tie), a prediction for every SGD setting, its claims only when it converged
    kin = res["summary"]["kinetic"]
    assert (kin["lr"], kin["batch"]) == (0.1, 16) and isinstance(kin["converged"], bool)
    ktab = pd.read_parquet(tmp_path / "run/diffusion-temperature/tables/kinetic.parquet")
    assert len(ktab) == 12 and ktab["fitted_here"].sum() == 1
    assert any(i.startswith("kinetic") for i in ids) == kin["trusted"]
    assert len(res["figures"]) == 2
    from memdyn.experiments.diffusion_temperature import DiffusionTemperatureConfig, kinetic_setting
    assert kinetic_setting(DiffusionTemperatureConfig()) == (0.02, 8)  # x = 400 against the middle 506 of 80..3,200
    assert (tab["length_at_4"].dropna() >= tab["length_at_1"].dropna() - 1e-9).mean() > 0.5  # coarser: longer
    rows = {r["prediction"][:30]: r for r in comparisons(summary.claims, {"diffusion-temperature": res["summary"]})}
    assert any(k.startswith("Under constant-step SGD") for k in rows) and any(k.startswith("Practical") for k in rows)
    # without the optional Adam runs the Adam row is left out, not failed
    sgd_only = [c for c in summary.claims if "opt=adam" not in c["id"]]
    no_adam = {k: v for k, v in res["summary"].items() if k != "adam"}
    rows = [r["prediction"] for r in comparisons(sgd_only, {"diffusion-temperature": no_adam})]
    assert not any(r.startswith("Practical") for r in rows) and any(r.startswith("Under constant-step") for r in rows)


def test_diffusion_episodes_runs_end_to_end_at_a_tiny_size(tmp_path):
    """diffusion-episodes' pipeline on a tiny grid (its quick form takes minutes; its claims are checked in the
    docs' runs): every setting measured at every spacing, settings with too few exits left out by name, the
    stylized fit and the report's rows built."""
    sets = ["diffusion-episodes.lrs=[0.05,0.1,0.2]", "diffusion-episodes.width=16", "diffusion-episodes.n=4",
            "diffusion-episodes.replicates=2", "diffusion-episodes.probes=8", "diffusion-episodes.pretrain_time=150",
            "diffusion-episodes.burn_time=2", "diffusion-episodes.window_time=20", "diffusion-episodes.sample_steps=3",
            "diffusion-episodes.ema_time=0.3", "diffusion-episodes.min_exits=2", "diffusion-episodes.relax_time=0.5"]
    summary = run_suite(["diffusion-episodes"], tmp_path / "run", quick=False, sets=sets, seed=7)
    assert not summary.errors
    res = json.loads((tmp_path / "run/diffusion-episodes/results.json").read_text())
    ids = [c["id"] for c in res["claims"]]
    assert len(set(ids)) == len(ids) and all(ID_PATTERN.fullmatch(i) for i in ids)
    assert {f"settled@lr={a:g},ema={e}" for a in (0.05, 0.1, 0.2) for e in (0, 1)} <= set(ids)
    assert {"shorter-episodes", "resolution@effect=lr"} <= set(ids)
    tab = pd.read_parquet(tmp_path / "run/diffusion-episodes/tables/settings.parquet")
    assert len(tab) == 6 and tab["ema"].sum() == 3
    few = tab[tab["exits"] < 2]  # every setting with fewer than min_exits exits is left out, by name
    assert len(res["summary"]["excluded"]) == len(few) and few["mean_length"].isna().sum() >= (few["exits"] == 0).sum()
    emas = [i for i in ids if i.startswith("ema-lengthens@")]  # one per learning rate whose EMA run was measured
    assert {f"ema-lengthens@lr={k}" for k in res["summary"]["ema_ratio"]} == set(emas)
    assert res["summary"]["stylized_fit"]["verdict"] in ("agrees", "disagrees", "undecided")
    rows = [r["prediction"] for r in comparisons(summary.claims, {"diffusion-episodes": res["summary"]})]
    assert any("EMA" in r for r in rows)
    assert (tmp_path / "run" / res["figures"][0]["file"]).stat().st_size > 10_000


def test_diffusion_tau_mem_runs_end_to_end_at_a_tiny_size(tmp_path):
    """diffusion-tau-mem's pipeline on tiny training sets (its quick form takes minutes; its claims are checked in
    the docs' runs): tau_mem and tau_gen per run, both slope claims and their resolution checks present."""
    sets = ["diffusion-tau-mem.ns=[8,12,16,24]", "diffusion-tau-mem.seeds=2", "diffusion-tau-mem.width=32",
            "diffusion-tau-mem.probes=8", "diffusion-tau-mem.held_out=200", "diffusion-tau-mem.sample_steps=3",
            "diffusion-tau-mem.forecast=1", "diffusion-tau-mem.batches=[16,32]", "diffusion-tau-mem.lr=0.003"]
    summary = run_suite(["diffusion-tau-mem"], tmp_path / "run", quick=False, sets=sets, seed=7)
    assert not summary.errors
    res = json.loads((tmp_path / "run/diffusion-tau-mem/results.json").read_text())
    ids = {c["id"] for c in res["claims"]}
    assert {"tau-mem-slope", "tau-gen-slope", "resolution@time=tau_mem", "resolution@time=tau_gen",
            "forecast@B=16,n=24", "forecast@B=32,n=24"} <= ids, ids
    s = res["summary"]
    assert s["slope_mem_se"] > 0 and len(s["local_slopes"]) == 3
    # each forecast was on disk before the runs it forecasts started, and a rerun keeps that record
    record = json.loads((tmp_path / "run/diffusion-tau-mem/forecast.json").read_text())
    tau = pd.read_parquet(tmp_path / "run/diffusion-tau-mem/tables/tau.parquet")
    for B in (16, 32):
        fc = record[f"B={B}"]
        assert fc["fit_ns"] == [8, 12, 16] and fc["forecasts"][0]["n"] == 24 and fc["forecasts"][0]["se"] > 0
        assert fc["made_unix"] < tau[(tau["B"] == B) & (tau["n"] == 24)]["started"].min()
        assert fc["made_unix"] > tau[(tau["B"] == B) & (tau["n"] == 16)]["started"].max()
    assert all(p["in_advance"] for p in s["predictions"]) and len(s["predictions"]) == 2 and s["forecasts_in_advance"]
    report = (tmp_path / "run/report.html").read_text()
    assert "Predictions made in advance" in report and "tau_mem (steps) at n = 24, batch 32" in report
    (tmp_path / "run/diffusion-tau-mem/results.json").unlink()
    run_suite(["diffusion-tau-mem"], tmp_path / "run", quick=False, sets=sets, seed=7)  # the cells are reused
    assert json.loads((tmp_path / "run/diffusion-tau-mem/forecast.json").read_text()) == record
    # a forecast that replaces an earlier one of the same runs (here: edited) is not in advance, and says so
    record["B=16"]["forecasts"][0]["tau_mem"] += 1.0
    (tmp_path / "run/diffusion-tau-mem/forecast.json").write_text(json.dumps(record))
    (tmp_path / "run/diffusion-tau-mem/results.json").unlink()
    run_suite(["diffusion-tau-mem"], tmp_path / "run", quick=False, sets=sets, seed=7)
    again = json.loads((tmp_path / "run/diffusion-tau-mem/results.json").read_text())["summary"]
    assert [p["in_advance"] for p in again["predictions"]] == [False, True] and "forecasts_in_advance" not in again
    assert len(json.loads((tmp_path / "run/diffusion-tau-mem/forecast.json").read_text())["history"]) == 1
    batches = pd.read_parquet(tmp_path / "run/diffusion-tau-mem/tables/batches.parquet")
    assert len(batches) == 4 and np.allclose(batches["ratio_epochs"], 2 * batches["ratio_steps"])
    for t in res["tables"]:
        assert len(pd.read_parquet(tmp_path / "run" / t)) >= 4
    rows = [r["prediction"] for r in comparisons(summary.claims, {"diffusion-tau-mem": s})]
    assert any("tau_mem" in r for r in rows)
    assert (tmp_path / "run" / res["figures"][0]["file"]).stat().st_size > 10_000


def test_self_consuming_runs_end_to_end_at_a_tiny_size(tmp_path):
    """The self-consuming pipeline on a tiny loop (its quick form takes minutes; its claims are checked in the docs'
    runs): every mode measured, the claims present with ids, the replace claim left out where it cannot fail."""
    sets = ["self-consuming.n=4", "self-consuming.generations=2", "self-consuming.replicates=2",
            "self-consuming.steps=400"]
    summary = run_suite(["self-consuming"], tmp_path / "run", quick=False, sets=sets, seed=5)
    assert not summary.errors
    res = json.loads((tmp_path / "run/self-consuming/results.json").read_text())
    ids = [c["id"] for c in res["claims"]]
    assert set(ids) == {"keeps-diversity@mixed", "keeps-diversity@accumulate"}, ids
    assert "1 - 1/M = 0.750" in res["summary"]["replace_undecided"]      # 2 loops of 4 items cannot fail the claim
    tab = pd.read_parquet(tmp_path / "run/self-consuming/tables/generations.parquet")
    assert set(tab["mode"]) == {"replace", "mixed", "accumulate"} and len(tab) == 3 * 3
    assert (tab["heterozygosity"] <= 0.75 + 1e-12).all()
    assert (tmp_path / "run" / res["figures"][0]["file"]).stat().st_size > 10_000
