"""The HTML report of a run directory: one self-contained file (figures embedded as base64)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .store import RunStore, atomic_write

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:1em 0}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.name,th.name{text-align:left}
.ok{color:#11772f;font-weight:600} .bad{color:#b00020;font-weight:600}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:.92em;margin-top:.4em}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.85em}
.err{background:#fff0f0;border-left:4px solid #b00020;padding:.6em 1em}
"""


_BOUND = {"at_least": "&ge; ", "at_most": "&le; "}


def _num(x: float) -> str:
    return f"{x:.5g}"


def _verdict(c: dict) -> str:
    if c["holds"]:
        return "<span class='ok'>holds</span>"
    return "<span class='bad'>fails</span>" + (" (finding: a real model disagrees)" if c.get("finding") else "")


def _claims_table(claims: list) -> str:
    rows = ["<table><tr><th class='name'>claim</th><th>predicted</th><th>measured</th><th>95% CI</th><th>z</th>"
            "<th>systematic</th><th>accuracy</th><th>tolerance</th><th>detects</th><th>verdict</th></tr>"]
    for c in claims:
        ok = _verdict(c)
        if c.get("flagged"):
            ok += " <span class='bad'>misfit</span>"
        tip = "; ".join(t for t in (c.get("detail", ""), c.get("systematic_source", ""), c.get("accuracy_source", ""))
                        if t)
        z = "" if c.get("z") is None else f"{c['z']:+.2f}"
        rows.append(f"<tr><td class='name' title='{html.escape(tip)}'>{html.escape(c['name'])}</td>"
                    f"<td>{_BOUND.get(c.get('side', 'both'), '')}{_num(c['predicted'])}</td><td>{_num(c['measured'])}</td>"
                    f"<td>[{_num(c['ci_low'])}, {_num(c['ci_high'])}]</td><td>{z}</td>"
                    f"<td>{_num(c.get('systematic', 0.0)) if c.get('systematic') else ''}</td>"
                    f"<td>{_num(c.get('accuracy', 0.0)) if c.get('accuracy') else ''}</td><td>{_num(c['tolerance'])}</td>"
                    f"<td>{_num(c['detectable']) if 'detectable' in c else ''}</td><td>{ok}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _claim_cell(claims: list) -> str:
    if not claims:
        return "<td class='name'>not modelled</td>"
    items = []
    for c in claims:
        ok = _verdict(c)
        if c.get("flagged"):
            ok += " <span class='bad'>misfit</span>"
        items.append(f"{html.escape(c['name'])}: predicted {_BOUND.get(c.get('side', 'both'), '')}{_num(c['predicted'])}, "
                     f"measured {_num(c['measured'])} [{_num(c['ci_low'])}, {_num(c['ci_high'])}] {ok}")
    return "<td class='name'>" + "<br>".join(items) + "</td>"


def _theory_vs_practice(claims: list, summaries: dict) -> str:
    from .practice import comparisons

    rows = comparisons(claims, summaries)
    if not rows:
        return ""
    out = ["<h2>Theory vs practice</h2><p>Each prediction as the stylized model tests it (exact references) and as "
           "a real diffusion model trained on MNIST digits shows it. Where the real model disagrees the row says by "
           "how much.</p><table><tr><th class='name'>prediction</th><th class='name'>stylized model</th>"
           "<th class='name'>real diffusion model</th><th class='name'>verdict</th></tr>"]
    for r in rows:
        tag = "ok" if r["verdict"] == "agrees" else "bad"
        how = f"<br><small>{html.escape(r['how'])}</small>" if r["how"] else ""
        out.append(f"<tr><td class='name'>{html.escape(r['prediction'])}</td>{_claim_cell(r['stylized'])}"
                   f"{_claim_cell(r['real'])}<td class='name'><span class='{tag}'>{html.escape(r['verdict'])}</span>"
                   f"{how}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _predictions_in_advance(summaries: dict) -> str:
    """Every forecast an experiment wrote down before it measured the quantity (its summary's ``predictions``:
    id, what, made, made_after, in_advance, forecast, forecast_se, measured, measured_se, z, holds)."""
    rows = [(name, p) for name, s in summaries.items() for p in s.get("predictions", [])]
    if not rows:
        return ""
    out = ["<h2>Predictions made in advance</h2><p>Each forecast was written to the run directory before the "
           "training runs it forecasts started (the time and the runs it rests on are given); then those runs "
           "measured the quantity. z = (measured - forecast) / sqrt(se_forecast^2 + se_measured^2); a forecast holds "
           "when |z| &le; 4.</p><table><tr><th class='name'>experiment</th><th class='name'>forecast of</th>"
           "<th class='name'>made</th><th>forecast</th><th>measured</th><th>z</th><th>verdict</th></tr>"]
    for name, p in rows:
        made = html.escape(f"{p['made']}, after {p['made_after']}") + ("" if p["in_advance"] else
                                                          " <span class='bad'>(after the runs started)</span>")
        z = "" if p.get("z") is None else f"{p['z']:+.2f}"
        out.append(f"<tr><td class='name'>{html.escape(name)}</td><td class='name'>{html.escape(p['what'])}</td>"
                   f"<td class='name'>{made}</td><td>{_num(p['forecast'])} &plusmn; {_num(p['forecast_se'])}</td>"
                   f"<td>{_num(p['measured'])} &plusmn; {_num(p['measured_se'])}</td><td>{z}</td>"
                   f"<td>{_verdict({'holds': p['holds'], 'finding': True})}</td></tr>")
    out.append("</table>")
    return "".join(out)


def write_report(run_dir) -> Path:
    """Write ``report.html`` in ``run_dir`` from its results.json files; return its path."""
    store = RunStore(run_dir)
    res = store.read_json("results.json")
    if res is None:
        raise FileNotFoundError(f"{run_dir} has no results.json (not a memdyn run directory)")
    cfg = store.read_json("config.json") or {}
    n_ok = sum(c["holds"] for c in res["claims"])
    n_find = sum(not c["holds"] and c.get("finding", False) for c in res["claims"])
    verdict = "all claims hold" if res["all_hold"] else f"{n_ok} of {len(res['claims'])} claims hold" + (
        f" ({n_find} failing claim{'s are findings' if n_find > 1 else ' is a finding'}: a real model disagrees "
        "with the theory)" if n_find else "")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>memdyn report</title><style>{_CSS}</style>"
             "</head><body>",
             "<h1>memdyn report</h1>",
             f"<p class='sub'>{html.escape(str(Path(run_dir).resolve()))} &middot; seed {res.get('seed')} &middot; "
             f"{'quick' if res.get('quick') else 'full'} run &middot; "
             f"<span class='{'ok' if res['all_hold'] else 'bad'}'>{verdict}</span></p>"]
    for name, msg in res.get("errors", {}).items():
        parts.append(f"<p class='err'><b>{html.escape(name)}</b>: {html.escape(msg)}</p>")
    parts.append("<p>The report walks through the theory in order. Each section states what the theory predicts, "
                 "shows the figure, and lists its claims: the prediction beside the measurement, the measurement's 95% "
                 "confidence interval, and a tolerance derived from the error budget (4 standard errors of measured - "
                 "predicted, plus a computed systematic bias, its source in the row's tooltip, plus the documented "
                 "accuracy of a deterministic solver). A claim holds when |measured - predicted| &le; tolerance; a "
                 "predicted value marked &ge; or &le; is a one-sided bound; z = (measured - predicted) / se; 'detects' is the "
                 "smallest true difference from the prediction (beyond a one-sided bound) that fails the claim with 95% "
                 "power, the tolerance plus 1.645 se; "
                 "<span class='bad'>misfit</span> marks a claim resting on a line fit inconsistent with a line "
                 "(chi^2 p &lt; 0.001; its errors are inflated by the Birge ratio).</p>")
    by_exp: dict[str, list] = {}
    summaries: dict[str, dict] = {}
    for c in res["claims"]:
        by_exp.setdefault(c["experiment"], []).append(c)
    section = None
    for name in res["experiments"]:
        exp = store.read_json(f"{name}/results.json")
        if exp is None:
            continue
        summaries[name] = exp.get("summary") or {}
        if exp.get("section") and exp["section"] != section:
            section = exp["section"]
            parts.append(f"<h2>{html.escape(section)}</h2>")
        claims = by_exp.get(name, [])
        ok_n = sum(c["holds"] for c in claims)
        tag = "ok" if ok_n == len(claims) else "bad"
        parts.append(f"<h3>{html.escape(name)}</h3><p class='sub'>{exp['seconds']:.1f} s &middot; "
                     f"<span class='{tag}'>{ok_n} of {len(claims)} claims hold</span></p>")
        if exp.get("prediction"):
            parts.append(f"<p><b>Prediction.</b> {html.escape(exp['prediction'])}</p>")
        for f in exp["figures"]:
            data = base64.b64encode(store.path(f["file"]).read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(f['file'])}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(f['caption'])}</figcaption></figure>")
        parts.append(_claims_table(claims))
    parts.append(_theory_vs_practice(res["claims"], summaries))
    parts.append(_predictions_in_advance(summaries))
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg, indent=2)) + "</pre>")
    parts.append("<h2>Versions and timings</h2><pre>" +
                 html.escape(json.dumps({"versions": res["versions"], "seconds": res["timings"]}, indent=2)) +
                 "</pre></body></html>")
    path = store.path("report.html")
    atomic_write(path, "\n".join(parts).encode())
    return path
