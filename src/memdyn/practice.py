"""Theory vs practice: each prediction tested both in the stylized model and in a real diffusion
model, side by side (the report's "Theory vs practice" section).

A row pairs the claims of a stylized-model experiment with those of a real-training experiment
that test the same prediction, and says whether the real model agrees: "agrees" when every real
claim holds on a fit consistent with its form, "agrees in direction, not in form" when a claim
holds but rests on a line the data reject (the claim is flagged as a misfit) or the experiment
reports that another form fits its data better (``form`` names that entry of its summary),
"disagrees" when a real claim fails, with the measured value against the prediction and z.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Comparison", "COMPARISONS", "comparisons"]


@dataclass(frozen=True)
class Comparison:
    """One prediction; ``stylized`` and ``real`` are (experiment, claim-name prefix) pairs (``stylized``
    None when the stylized model does not speak to it); ``form``: the key of a boolean in the real
    experiment's summary that says whether its data have the predicted form (its ``verdict`` says
    why)."""

    prediction: str
    stylized: tuple[str, str] | None
    real: tuple[str, str]
    form: str | None = None


COMPARISONS = [
    Comparison("Larger steps give shorter memorization episodes",
               ("noise-mitigation", "episode length ratio when a grows"),
               ("diffusion-episodes", "larger steps, shorter episodes")),
    Comparison("Episode lengths are Arrhenius in the step: ln L grows linearly in 1/a with slope the barrier V",
               ("memorization", "Arrhenius slope"),
               ("diffusion-episodes", "Arrhenius slope"), form="arrhenius_form"),
    Comparison("Less noise in the sampled parameters lengthens episodes (stylized: smaller sigma; real: EMA weights)",
               ("noise-mitigation", "episode length ratio when sigma grows"),
               ("diffusion-episodes", "EMA")),
    Comparison("Retrained on its own samples, a model loses diversity like Wright-Fisher resampling (replace)",
               ("collapse", "E[heterozygosity]"),
               ("self-consuming", "replace (alpha = 0) loses diversity")),
    Comparison("Fresh real data or accumulated samples keep diversity",
               ("degeneration", "stationary homozygosity"),
               ("self-consuming", "fresh real data")),
    Comparison("Memorization sets in later for a larger training set: tau_mem grows like n",
               None, ("diffusion-tau-mem", "slope of ln tau_mem")),
    Comparison("Samples look real before they copy: tau_gen grows more slowly than tau_mem",
               None, ("diffusion-tau-mem", "tau_gen grows more slowly")),
]


def _find(claims: list[dict], where) -> list[dict]:
    if where is None:
        return []
    exp, prefix = where
    return [c for c in claims if c.get("experiment") == exp and c["name"].startswith(prefix)]


def _verdict(real: list[dict], summary: dict, form: str | None) -> tuple[str, str]:
    failing = [c for c in real if not c["holds"]]
    if failing:
        how = "; ".join(f"{c['name']}: measured {c['measured']:.4g} against {c['predicted']:.4g}"
                        + (f" (z = {c['z']:+.2f})" if c.get("z") is not None else "") for c in failing)
        return "disagrees", how
    misfit = [c for c in real if c.get("flagged")]
    if misfit:
        return "agrees in direction, not in form", "; ".join(c.get("detail", "") for c in misfit)
    if form is not None and summary.get(form) is False:
        return "agrees in direction, not in form", str(summary.get("verdict", ""))
    return "agrees", ""


def comparisons(claims: list[dict], summaries: dict | None = None) -> list[dict]:
    """The rows for which the run measured the real model: prediction, the stylized and real claims,
    the verdict and, where the real model disagrees, by how much. ``summaries``: {experiment: its
    summary dict} (for the ``form`` checks)."""
    rows = []
    for comp in COMPARISONS:
        real = _find(claims, comp.real)
        if not real:
            continue
        verdict, how = _verdict(real, (summaries or {}).get(comp.real[0], {}), comp.form)
        rows.append({"prediction": comp.prediction, "stylized": _find(claims, comp.stylized), "real": real,
                     "stylized_experiment": comp.stylized[0] if comp.stylized else None,
                     "real_experiment": comp.real[0], "verdict": verdict, "how": how})
    return rows
