import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memdyn.claims import Z_CI, Z_TOL, claim
from memdyn.stats import line_fit, mean_se
from memdyn.experiments import EXPERIMENTS, ConfigError
from memdyn.experiments.base import parse_value
from memdyn.store import RunStore


def test_claim_holds_within_tolerance_only():
    c = claim("c", "x", 1.0, 1.3, 0.1)
    assert c.tolerance == pytest.approx(Z_TOL * 0.1)
    assert c.holds
    assert (c.ci_low, c.ci_high) == pytest.approx((1.3 - Z_CI * 0.1, 1.3 + Z_CI * 0.1))
    assert not claim("c", "x", 1.0, 1.5, 0.1).holds
    with pytest.raises(ValueError, match="non-finite"):
        claim("c", "x", 1.0, float("nan"), 0.1)


def test_mean_se_and_line_fit():
    m, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    x = np.array([0.1, 0.2, 0.3, 0.5])
    fit = line_fit(x, 2.0 - 3.0 * x, np.full(4, 0.01))
    np.testing.assert_allclose([fit.intercept, fit.slope], [2.0, -3.0], atol=1e-12)
    assert fit.cov[0, 0] > 0 and fit.chi2 < 1e-12 and not fit.flagged


def test_store_atomic_json_table_and_cells(tmp_path):
    st_ = RunStore(tmp_path / "r")
    st_.write_json("a/b.json", {"x": 1})
    assert st_.read_json("a/b.json") == {"x": 1}
    with pytest.raises(ValueError):
        st_.write_json("c.json", {"x": float("nan")})
    st_.write_table("t.parquet", pd.DataFrame({"a": [1.0, 2.0]}))
    assert pd.read_parquet(st_.path("t.parquet"))["a"].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="non-finite"):
        st_.write_table("u.parquet", pd.DataFrame({"a": [1.0, np.nan]}))
    assert not st_.path("u.parquet").exists()
    calls = []
    compute = lambda: calls.append(1) or {"v": np.arange(3.0), "s": 2.5}  # noqa: E731
    first, second = st_.cell("cells/c.npz", compute), st_.cell("cells/c.npz", compute)
    assert len(calls) == 1 and second["s"] == 2.5
    np.testing.assert_array_equal(first["v"], second["v"])
    assert not [p for p in (tmp_path / "r").rglob("*.tmp")]


def test_parse_value():
    assert parse_value("0.1") == 0.1
    assert parse_value("[0.1, 0.2]") == [0.1, 0.2]
    assert parse_value("0.1,0.2") == [0.1, 0.2]
    assert parse_value("float32") == "float32"


@settings(max_examples=60, deadline=None)
@given(step=st.floats(min_value=1e-3, max_value=10.0), sigma=st.floats(min_value=1e-3, max_value=100))
def test_timescales_config_accepts_documented_ranges(step, sigma):
    cfg = EXPERIMENTS["timescales"].resolve(True, {"step": step, "sigma": sigma})
    assert cfg.step == step and cfg.chains == EXPERIMENTS["timescales"].quick["chains"]


@settings(max_examples=60, deadline=None)
@given(step=st.one_of(st.floats(max_value=9.99e-4), st.floats(min_value=10.001), st.just(float("nan"))))
def test_timescales_config_rejects_bad_step_naming_the_key(step):
    with pytest.raises(ConfigError, match=r"timescales\.step="):
        EXPERIMENTS["timescales"].resolve(False, {"step": step})


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_key_documented_and_unknown_key_rejected(name):
    exp = EXPERIMENTS[name]
    for row in exp.describe():
        assert row["meaning"], f"{name}.{row['key']} has no description"
    with pytest.raises(ConfigError, match="unknown key 'nosuch'.*valid keys"):
        exp.resolve(False, {"nosuch": 1})
    json.dumps(exp.Config(**exp.quick).model_dump())  # configs serialise (resolve and its checks: test_cli)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="eps"):
        EXPERIMENTS["timescales"].resolve(False, {"eps": [0.1, 0.1]})
    with pytest.raises(ConfigError, match="coupling"):
        EXPERIMENTS["timescales"].resolve(False, {"coupling": 50.0})
    with pytest.raises(ConfigError, match="gibbs.steps"):
        EXPERIMENTS["gibbs"].resolve(False, {"steps": [0.3, 0.4, 0.5]})
    gibbs = EXPERIMENTS["gibbs"]
    cfg = gibbs.resolve(False)
    t_max = abs(gibbs.well(cfg).delta_f) / 3  # the binding limit for the default well
    assert math.isclose(gibbs.grid(cfg)[-1], 2 * t_max / cfg.sigma**2)
    with pytest.raises(ConfigError, match="gibbs.saddle"):
        gibbs.resolve(False, {"saddle": 0.05})


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_files_honour_the_umask(tmp_path, mask, mode):
    """Every file of a run gets 0666 less the umask, like any other tool's output, still atomically."""
    import os
    import stat

    from matplotlib.figure import Figure

    from memdyn.store import _umask

    old = os.umask(mask)
    try:
        assert _umask() == mask
        st_ = RunStore(tmp_path / "r")
        st_.write_json("a/b.json", {"x": 1})
        st_.write_table("t.parquet", pd.DataFrame({"a": [1.0]}))
        st_.write_figure("f.png", Figure())
        st_.cell("cells/c.npz", lambda: {"v": np.arange(3.0)})
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert len(files) == 4 and not [p for p in files if p.name.endswith(".tmp")]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}


def test_cells_are_keyed_by_the_code_hash(tmp_path, monkeypatch):
    from memdyn import store as store_mod
    from memdyn.experiments.base import Context

    ctx = Context(RunStore(tmp_path / "r"), "exp", 0)
    calls = []
    compute = lambda: calls.append(1) or {"v": np.arange(2.0)}  # noqa: E731
    ctx.cell("k", compute)
    ctx.cell("k", compute)
    assert len(calls) == 1  # reused while the code is the same
    ctx.cell("k2", compute)  # another key beside it
    monkeypatch.setattr(store_mod, "code_hash", lambda: "000000000000")
    monkeypatch.setattr("memdyn.experiments.base.code_hash", lambda: "000000000000")
    ctx.cell("k", compute)
    assert len(calls) == 3  # other code: recomputed, never mixed, and the stale cell is not kept
    names = sorted(p.name for p in (tmp_path / "r/exp/cells").iterdir())
    assert len(names) == 2 and "k.000000000000.npz" in names and names[1].startswith("k2.")


def test_cell_key_follows_the_code_of_the_experiments_import_closure(tmp_path):
    """An edit of the experiment, or of the code of a module it uses, changes its key; a docstring or
    comment edit in a module it uses, or any edit of a module it does not use, keeps it."""
    import shutil
    from pathlib import Path

    import memdyn
    from memdyn.store import code_hash, import_closure

    root = tmp_path / "memdyn"
    shutil.copytree(Path(memdyn.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    gibbs = "memdyn.experiments.gibbs"
    closure = import_closure(gibbs, root)
    assert {"memdyn.markov", "memdyn.noise", "memdyn.experiments.occupation"} <= set(closure)
    assert "memdyn.collapse" not in closure and "memdyn.experiments.memorization" not in closure

    def key():
        code_hash.cache_clear()
        return code_hash(gibbs, root)

    def edit(rel, old, new):
        f = root / rel
        text = f.read_text()
        assert old in text
        f.write_text(text.replace(old, new, 1))

    k0 = key()
    edit("markov.py", '"""', '"""A docstring edit. ')  # module docstring of a module gibbs uses
    edit("markov.py", "\nimport ", "\n# a comment\nimport ")
    assert key() == k0
    edit("collapse.py", "\nimport ", "\nUNRELATED = 1\nimport ")  # code of a module gibbs does not use
    assert key() == k0
    edit("markov.py", "\nimport ", "\nCHANGED = 1\nimport ")  # code of a module gibbs uses
    k1 = key()
    assert k1 != k0
    edit("experiments/gibbs.py", '"""', '"""Edited. ')  # any edit of the experiment itself
    assert key() != k1
    with pytest.raises(ValueError, match="not a module of memdyn"):
        import_closure("memdyn.nowhere", root)


def test_claim_error_budget():
    c = claim("c", "x", 1.0, 1.35, 0.05, predicted_se=0.05, systematic=0.02, systematic_source="computed bias")
    assert c.tolerance == pytest.approx(Z_TOL * math.hypot(0.05, 0.05) + 0.02)
    assert c.z == pytest.approx(0.35 / math.hypot(0.05, 0.05)) and c.kind == "statistical"
    assert not c.holds  # 0.35 > 4 * 0.0707 + 0.02 = 0.303
    d = claim("c", "solver", 0.5, 0.503, accuracy=0.01, accuracy_source="documented target")
    assert d.holds and d.z is None and d.kind == "deterministic" and d.tolerance == 0.01
    with pytest.raises(ValueError, match="source"):
        claim("c", "x", 1.0, 1.0, systematic=0.1)
    with pytest.raises(ValueError, match="source"):
        claim("c", "x", 1.0, 1.0, accuracy=0.1)
    assert claim("c", "low", 2.0, 1.9, 0.05, side="at_least").holds and not claim("c", "low", 2.0, 1.7, 0.05, side="at_least").holds


def test_line_fit_flags_misfit_and_inflates_by_birge_ratio():
    x = np.linspace(0.0, 1.0, 8)
    se = np.full(8, 0.01)
    good = line_fit(x, 1 + 2 * x + se * np.array([1, -1, 0.5, -0.5, 1, -1, 0.3, -0.3]), se)
    assert not good.flagged and good.p_value > 0.01
    bad = line_fit(x, 1 + 2 * x + 0.5 * x**2, se)  # curved data, tiny errors
    assert bad.flagged and bad.p_value < 1e-3 and bad.birge == pytest.approx(math.sqrt(bad.chi2 / 6))
    plain_se = math.sqrt(np.linalg.inv(np.stack([np.ones(8), x], 1).T @ np.stack([np.ones(8), x], 1) / 1e-4)[0, 0])
    assert bad.intercept_se == pytest.approx(plain_se * bad.birge)
    c = claim("c", "intercept", 1.0, bad.intercept, bad.intercept_se, fit=bad)
    assert c.flagged and "INCONSISTENT" in c.detail


def test_extrapolate_recovers_a_polynomial_limit_and_bounds_the_bias():
    from memdyn.stats import extrapolate

    a = np.linspace(0.01, 0.05, 6)
    e = extrapolate(a, -0.3 + 2 * a - 7 * a**2, degree=2)
    assert e.value == pytest.approx(-0.3, abs=1e-12) and e.bias == pytest.approx(abs(e.lower + 0.3))
    e3 = extrapolate(a, -0.3 + 2 * a - 7 * a**2 + 40 * a**3, degree=2)
    assert abs(e3.value + 0.3) <= e3.bias  # the cruder fit's change bounds the better one's error
    with pytest.raises(ValueError, match="distinct points"):
        extrapolate([0.1, 0.2], [1.0, 2.0], degree=2)


def test_z_summary_of_standard_normals():
    from memdyn.stats import z_summary

    z = np.random.default_rng(0).standard_normal(400)
    s = z_summary(z)
    assert abs(s.mean) < 4 / 20 and abs(s.sd - 1) < 4 * 0.0354 and s.ks_p > 1e-3 and not s.off()
    assert z_summary(2 * z).off() and z_summary(z + 1).off()


def test_store_table_allows_na_in_nullable_columns_only(tmp_path):
    st_ = RunStore(tmp_path / "r")
    st_.write_table("na.parquet", pd.DataFrame({"z": pd.array([1.0, None], dtype="Float64")}))
    assert pd.read_parquet(st_.path("na.parquet"))["z"].isna().tolist() == [False, True]
    with pytest.raises(ValueError, match="non-finite values in columns \\['z'\\]"):
        st_.write_table("inf.parquet", pd.DataFrame({"z": pd.array([1.0, float("inf")], dtype="Float64")}))


def _c(exp, id, name="some text", holds=True, flagged=False, z=None):
    return {"experiment": exp, "id": id, "name": name, "holds": holds, "flagged": flagged, "measured": 0.5,
            "predicted": 1.0, "z": z, "detail": "line misfit", "side": "both",
            "finding": not id.startswith(("resolution", "settled"))}


def test_theory_vs_practice_verdicts():
    from memdyn.practice import comparisons

    claims = [_c("diffusion-episodes", "shorter-episodes"), _c("diffusion-episodes", "ema-lengthens@lr=0.001"),
              _c("noise-mitigation", "episode-length-ratio@knob=step"),
              _c("noise-mitigation", "episode-length-ratio@knob=sigma"),
              _c("diffusion-temperature", "direction@opt=sgd"), _c("diffusion-temperature", "resolution@opt=sgd"),
              _c("diffusion-temperature", "collapse@opt=sgd,x=800,lr=0.02"),
              _c("diffusion-tau-mem", "tau-mem-slope", holds=False, z=-5.0),
              _c("diffusion-tau-mem", "resolution@time=tau_mem"), _c("diffusion-tau-mem", "tau-gen-slope"),
              _c("diffusion-tau-mem", "resolution@time=tau_gen")]
    rows = {r["prediction"][:20]: r for r in comparisons(claims, {"diffusion-temperature": {
        "sgd_barrier": False, "verdict": "V not shown to differ from 0"}, "diffusion-tau-mem": {"slope_test": True},
        "diffusion-episodes": {"ema_measured": True}})}
    assert rows["Larger steps give sh"]["verdict"] == "agrees" and rows["Larger steps give sh"]["stylized"]
    cold = rows["Colder is longer und"]
    assert cold["verdict"] == "agrees in direction, V not shown > 0" and "not shown" in cold["how"]
    tau = rows["Memorization sets in"]
    assert tau["verdict"] == "disagrees" and "z = -5.00" in tau["how"] and tau["stylized"] == []
    assert len(tau["real"]) == 2 and len(rows) == 6  # rows without a real-model claim are left out
    # the quick form makes no slope claims and writes no slope_test: its rows are left out, not failed
    quick = [c for c in claims if c["id"] not in ("tau-mem-slope", "tau-gen-slope")]
    assert not any(r["prediction"].startswith("Memorization sets in") for r in comparisons(quick))
    # a failing check of the measurement (not a finding) gives no verdict on the model
    bad = [c if c["id"] != "resolution@time=tau_mem" else {**c, "holds": False} for c in claims]
    rows = {r["prediction"][:20]: r for r in comparisons(bad, {"diffusion-tau-mem": {"slope_test": True}})}
    assert rows["Memorization sets in"]["verdict"] == "not measured reliably"
    flagged = comparisons([_c("diffusion-temperature", "direction@opt=sgd", flagged=True),
                           _c("diffusion-temperature", "resolution@opt=sgd"),
                           _c("diffusion-temperature", "collapse@opt=sgd,x=800,lr=0.02")],
                          {"diffusion-temperature": {"sgd_barrier": True}})
    row = next(r for r in flagged if r["prediction"].startswith("Colder"))
    assert row["verdict"] == "agrees in direction, not in form" and row["how"] == "line misfit"


def test_theory_vs_practice_rows_for_forecasts_and_the_independent_barrier():
    """The forecast row takes every forecast claim and shows a failing one; the kinetic rows appear only when the
    kinetic model was trusted (its claims made), and then need their claims."""
    from memdyn.practice import comparisons

    claims = [_c("diffusion-tau-mem", "forecast@B=64,n=256"), _c("diffusion-tau-mem", "forecast@B=64,n=512",
                                                                 holds=False, z=4.5),
              _c("diffusion-temperature", "kinetic-barrier@opt=sgd"),
              _c("diffusion-temperature", "kinetic@opt=sgd,lr=0.02,B=8"),
              _c("memorization", "arrhenius-slope"), _c("diffusion-temperature", "direction@opt=sgd"),
              _c("diffusion-temperature", "resolution@opt=sgd"), _c("diffusion-temperature", "collapse@opt=sgd,x=800,lr=0.02")]
    rows = {r["prediction"][:20]: r for r in comparisons(claims, {
        "diffusion-tau-mem": {"forecasts_in_advance": True}, "diffusion-temperature": {"kinetic_trusted": True,
                                                                          "kinetic_predicted": True}})}
    fc = rows["Forecast before trai"]
    assert fc["verdict"] == "disagrees" and len(fc["real"]) == 2 and "z = +4.50" in fc["how"]
    assert rows["A barrier measured w"]["verdict"] == "agrees" and rows["A barrier measured w"]["stylized"]
    assert rows["The kinetic model fi"]["verdict"] == "agrees"
    untrusted = comparisons(claims[:2], {"diffusion-tau-mem": {"forecasts_in_advance": True}, "diffusion-temperature": {}})
    assert [r["prediction"][:20] for r in untrusted] == ["Forecast before trai"]
    assert comparisons(claims[:2], {"diffusion-tau-mem": {"predictions": []}}) == []  # not made in advance: no row
    with pytest.raises(ValueError, match="kinetic-barrier"):
        comparisons(claims[:2] + claims[5:], {"diffusion-temperature": {"kinetic_trusted": True}})


def test_theory_vs_practice_pairs_claims_by_id_and_fails_loudly_without_one():
    """Rewording a claim's text changes nothing; a needed id that is missing raises; both halves of a row
    (the accumulate claim beside the mixed one) are checked."""
    from memdyn.practice import comparisons

    def run(**text):
        return [_c("self-consuming", "replace-diversity", text.get("r", "replace loses diversity")),
                _c("self-consuming", "keeps-diversity@mixed", text.get("m", "fresh data keep diversity")),
                _c("self-consuming", "keeps-diversity@accumulate", text.get("a", "accumulating keeps diversity"),
                   holds=text.get("holds", True), z=-6.0)]

    def table(claims):
        return [(r["prediction"], r["verdict"], [c["id"] for c in r["real"]]) for r in comparisons(claims)]

    assert table(run()) == table(run(r="reworded", m="also reworded", a="and this one"))
    keep = next(r for r in comparisons(run(holds=False)) if r["prediction"].startswith("Fresh real data"))
    assert keep["verdict"] == "disagrees" and "accumulating keeps diversity" in keep["how"]
    with pytest.raises(ValueError, match="self-consuming ran but has no claim with id 'keeps-diversity@accumulate'"):
        comparisons(run()[:2])


def test_theory_vs_practice_row_decided_by_a_stylized_fit():
    from memdyn.practice import comparisons

    claim = {"experiment": "diffusion-episodes", "id": "shorter-episodes", "name": "larger steps, shorter episodes: x",
             "holds": True, "flagged": False, "measured": 0.5, "predicted": 0.0, "z": 3.0, "detail": "",
             "side": "at_least"}
    ema = {**claim, "id": "ema-lengthens@lr=0.001"}
    fit = {"verdict": "disagrees", "how": "V = -0.0006 +- 0.0001"}
    rows = {r["prediction"][:10]: r for r in comparisons([claim, ema], {"diffusion-episodes": {"stylized_fit": fit}})}
    assert rows["Fitted to "]["verdict"] == "disagrees" and rows["Fitted to "]["how"] == fit["how"]
    assert rows["Larger ste"]["verdict"] == "agrees"  # the claim itself holds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stylized_fit_recovers_a_known_barrier(seed):
    """Mean lengths drawn from the exit law L = P exp(V / a) / a with known noise: V within its
    error budget, the verdict 'agrees'; a law whose a L grows with a 'disagrees'."""
    from memdyn.practice import stylized_fit

    rng = np.random.default_rng(seed)
    a = np.array([0.01, 0.02, 0.04, 0.08])
    V, lnP, se = 0.05, -1.0, np.full(4, 0.05)
    y = lnP + V / a - np.log(a) + se * rng.standard_normal(4)
    fit = stylized_fit(a, y, se, eps=0.1)
    assert abs(fit.barrier - V) <= 4 * fit.barrier_se
    assert fit.verdict()["verdict"] == "agrees" and np.allclose(fit.slow_time, 1 / (a * 0.1))
    assert np.allclose(fit.predicted, fit.bounded)  # V >= 0: the free fit is the bounded one
    boot = y + se * rng.standard_normal((500, 4))
    assert stylized_fit(a, y, se, boot=boot).barrier_se == pytest.approx(fit.barrier_se, rel=0.2)
    grows = stylized_fit(a, -0.2 * np.log(a) + se * rng.standard_normal(4), se)  # L ~ a^-0.2: a L grows with a
    out = grows.verdict()
    assert grows.barrier < 0 and out["verdict"] == "disagrees" and "grows with the step" in out["how"]
    assert np.allclose(grows.bounded + np.log(a), grows.bounded_log_prefactor)
    assert grows.rise == pytest.approx(grows.log_length[-1] - grows.log_length[0] + math.log(8))
    flat = stylized_fit(a, -np.log(a) + se * rng.standard_normal(4), se)  # V = 0 exactly: a L flat
    assert flat.verdict()["verdict"] == "agrees"


def test_stylized_fit_bad_input():
    from memdyn.practice import stylized_fit

    with pytest.raises(ValueError, match="steps must be finite and > 0"):
        stylized_fit([0.0, 0.1], [1.0, 2.0], [0.1, 0.1])
    with pytest.raises(ValueError, match="steps must be increasing"):
        stylized_fit([0.2, 0.1], [1.0, 2.0], [0.1, 0.1])
    with pytest.raises(ValueError, match="one length >= 2"):
        stylized_fit([0.1], [1.0], [0.1])
    with pytest.raises(ValueError, match="boot must have shape"):
        stylized_fit([0.1, 0.2], [1.0, 2.0], [0.1, 0.1], boot=np.zeros((5, 3)))


def test_replicated_line_fit_tests_the_lack_of_fit():
    """Lines with a constant relative scatter: coefficients within their errors, the F test's p
    uniform (its 5 % tail holds 5 % of 400 data sets within 4 binomial errors); a bent curve is
    rejected; bad input is named."""
    from memdyn.stats import replicated_line_fit

    rng = np.random.default_rng(0)
    n = np.repeat([8.0, 16.0, 32.0, 64.0], 3)
    t0, c = 40.0, 17.0
    ps, zs = [], []
    for _ in range(400):
        y = (t0 + c * n) * (1 + 0.1 * rng.standard_normal(n.size))
        fit = replicated_line_fit(n, y)
        ps.append(fit.p_value)
        zs.append((fit.slope - c) / fit.slope_se)
    tail = np.mean(np.array(ps) < 0.05)
    assert abs(tail - 0.05) <= 4 * math.sqrt(0.05 * 0.95 / 400)
    assert abs(np.mean(zs)) < 0.2 and 0.8 < np.std(zs) < 1.3
    bent = replicated_line_fit(n, (t0 + 0.3 * n**2) * (1 + 0.02 * rng.standard_normal(n.size)))
    assert bent.flagged and bent.p_value < 1e-3
    with pytest.raises(ValueError, match="at least 3 distinct x and a replicate"):
        replicated_line_fit([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


def test_a_table_with_nan_stops_its_experiment_with_a_message_not_a_traceback(tmp_path, monkeypatch):
    from memdyn.experiments.base import Outcome
    from memdyn.runner import run_suite

    exp = EXPERIMENTS["refit"]

    def broken(cfg, ctx):
        return Outcome([claim("c", "x", 1.0, 1.0, 0.1)], {"t": pd.DataFrame({"a": [1.0, np.nan]})})

    monkeypatch.setattr(exp, "run", broken)
    res = run_suite(["refit"], tmp_path / "D", quick=True)
    assert "refit made a table that cannot be stored" in res.errors["refit"] and "['a']" in res.errors["refit"]
    assert not res.all_hold and not list((tmp_path / "D").rglob("*.parquet"))
    summary = json.loads((tmp_path / "D" / "results.json").read_text())
    assert summary["experiments"]["refit"]["status"] == "error"


def test_relative_line_coef_fits_each_row_as_the_replicated_fit():
    from memdyn.stats import relative_line_coef, replicated_line_fit

    rng = np.random.default_rng(5)
    n = np.repeat([16.0, 32.0, 64.0, 128.0], 4)
    rows = (300 + 9.0 * n) * (1 + 0.1 * rng.standard_normal((6, n.size)))
    c0, c1 = relative_line_coef(n, rows)
    assert c0.shape == c1.shape == (6,)
    for r, a, b in zip(rows, c0, c1):
        fit = replicated_line_fit(n, r)
        assert math.isclose(a, fit.intercept, rel_tol=1e-9) and math.isclose(b, fit.slope, rel_tol=1e-9)


def test_every_claim_states_the_effect_it_detects_with_95_percent_power():
    from memdyn.claims import Z_POWER

    rng = np.random.default_rng(7)
    c = claim("x", "at least", 1.0, 1.0, 0.1, predicted_se=0.05, systematic=0.02, systematic_source="s",
              side="at_least")
    assert c.detectable == pytest.approx(c.tolerance + Z_POWER * math.hypot(0.1, 0.05))
    # a true value that far below the bound fails the claim 95 % of the time
    draws = 1.0 - c.detectable + math.hypot(0.1, 0.05) * rng.standard_normal(20_000)
    fails = np.mean([not claim("x", "y", 1.0, m, 0.1, predicted_se=0.05, systematic=0.02, systematic_source="s",
                               side="at_least").holds for m in draws[:4000]])
    assert abs(fails - 0.95) < 4 * math.sqrt(0.95 * 0.05 / 4000)
    assert claim("d", "deterministic", 0.0, 0.01, accuracy=0.02, accuracy_source="doc").detectable == pytest.approx(0.02)
    assert "detectable" in c.to_dict()
