import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memdyn.claims import Z_CI, Z_TOL, claim, mean_se, weighted_line_fit
from memdyn.experiments import EXPERIMENTS, ConfigError
from memdyn.experiments.base import parse_value
from memdyn.store import RunStore


def test_claim_holds_within_tolerance_only():
    c = claim("x", 1.0, 1.3, 0.1)
    assert c.tolerance == pytest.approx(Z_TOL * 0.1)
    assert c.holds
    assert (c.ci_low, c.ci_high) == pytest.approx((1.3 - Z_CI * 0.1, 1.3 + Z_CI * 0.1))
    assert not claim("x", 1.0, 1.5, 0.1).holds
    with pytest.raises(ValueError, match="non-finite"):
        claim("x", 1.0, float("nan"), 0.1)


def test_mean_se_and_line_fit():
    m, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    x = np.array([0.1, 0.2, 0.3, 0.5])
    coef, cov = weighted_line_fit(x, 2.0 - 3.0 * x, np.full(4, 0.01))
    np.testing.assert_allclose(coef, [2.0, -3.0], atol=1e-12)
    assert cov[0, 0] > 0


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
    json.dumps(exp.resolve(True).model_dump())  # configs serialise


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
