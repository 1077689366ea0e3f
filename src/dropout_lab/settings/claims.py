"""The registered claims: each claim is one object, and every part of the pipeline iterates over them.

A `Claim` names what the analysis computes and what the paper prints:
- `key`: its key in claims.json (and the stem of its paper macros);
- `number` and `title`: how the verdict table, the protocol table and the paper name it;
- `settings`: the block of `claims:` in config/config.yaml that holds its experiment and settings;
- `reads`: the runs it judges: a sweep of settings.experiments (its runs in the claim's experiment),
  or a selection of analysis.claims.SELECTIONS for a claim that is not one sweep's;
- `statistic`: its statistic and decision rule, a function of analysis.claims.STATISTICS;
- `section`: the paper section that presents it (paper.report.SECTIONS), if it has one of its own;
- `estimate`: the estimate the verdict table prints, from the claim's result in claims.json.

The analysis judges every registered claim whose runs exist, the verdict table and the protocol
table list every registered claim (a claim whose experiment did not run says "not run"), and the
numbers are the registry's, so a claim added here can neither vanish nor renumber another.
Light on purpose: no pandas, so the paper wing and the workflow read it.

A claim of the gate-parity grid exists once per gate compared with the reference gate (`for_gate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from dropout_lab.settings.vocabulary import REFERENCE_GATE, gate_title, parity_key

Result = Mapping[str, Any]


def rate_estimate(result: Result) -> str:
    """The default estimate: the claim's per-rate headline, else its best rate."""
    if "headline" in result:
        return result["headline"]
    return f"rate {result['estimate']:g}" if "estimate" in result else "--"


def _optimum_estimate(result: Result) -> str:
    """The best rate, and the rates within the margin of it (claim 1a's rule, analysis.optimum)."""
    if "equivalent" not in result:
        return f"rate {result['estimate']:g}"
    within = ", ".join(f"{r:g}" for r in result["equivalent"])
    return f"best rate {result['estimate']:g}; within {100 * result['margin']:g} points of it: {within}"


def _budget_estimate(result: Result) -> str:
    if result["estimate"] is None:
        return "--"
    first, last = result["budgets"][0], result["budgets"][-1]
    lo, hi = result["interval"]
    epochs = "epoch" if first["epochs"] == 1 else "epochs"
    return (f"best rate {first['best']:g} at {first['epochs']} {epochs}, {last['best']:g} at {last['epochs']} "
            f"(shift {result['estimate']:+g}, interval [{lo:+g}, {hi:+g}])")


def _conventions_estimate(result: Result) -> str:
    return "test loss without scaling by p: " + ", ".join(
        f"{row['mean_loss_increase']:+.3f} ({row['gate']})" for row in result["table"])


@dataclass(frozen=True)
class Claim:
    key: str
    number: str  # "" for a check that is not one of the article's numbered claims
    title: Callable[[Mapping[str, Any], Result | None], str]  # (the claims: block, the result or None) -> title
    settings: str
    reads: str
    statistic: str
    section: str | None = None
    estimate: Callable[[Result], str] = rate_estimate
    params: Mapping[str, Any] = field(default_factory=dict)  # what one instance of a family judges (its gate)

    def label(self, config: Mapping[str, Any], result: Result | None = None) -> str:
        """The claim as the tables list it: its number and title."""
        title = self.title(config["claims"], result)
        return f"{self.number}: {title}" if self.number else title

    @property
    def macro(self) -> str:
        """The stem of its LaTeX macros (\\<stem>Verdict, \\<stem>Estimate): the key in CamelCase, digits spelt."""
        words = "Zero One Two Three Four Five Six Seven Eight Nine".split()
        camel = "".join(part[:1].upper() + part[1:] for part in self.key.split("_"))
        return re.sub(r"\d", lambda m: words[int(m.group())], camel)


def _claimed(claims: Mapping[str, Any]) -> str:
    return f"{claims['optimum']['claimed_rate']:g}"


CLAIMS: tuple[Claim, ...] = (
    Claim("optimum", "1a", lambda c, r: f"best test accuracy at rate {_claimed(c)}", "optimum", "hidden_sweep",
          "optimum", section="optimum", estimate=_optimum_estimate),
    Claim("regularisation", "1b", lambda c, r: f"rate {_claimed(c)} regularises most (smallest gap)", "optimum",
          "hidden_sweep", "regularisation"),
    Claim("weight_norm", "1c", lambda c, r: f"rate {_claimed(c)} regularises most (smallest weights)", "optimum",
          "hidden_sweep", "weight_norm"),
    Claim("width_optimum", "1d", lambda c, r: f"best test accuracy at rate {_claimed(c)} with $p \\cdot n$ fixed",
          "width_optimum", "width_sweep", "width_optimum", section="width_optimum"),
    Claim("budget", "1e", lambda c, r: "the best rate does not move with the budget", "budget", "budget_sweep",
          "budget", section="budget", estimate=_budget_estimate),
    Claim("input_rate", "2", lambda c, r: f"input rate $\\le$ {c['input_rate']['threshold']:g}", "input_rate",
          "input_sweep", "input_rate", section="input_rate"),
    Claim("placement", "2b", lambda c, r: "hidden dropout adds to input dropout", "placement", "placement",
          "placement", estimate=lambda r: "--" if r["estimate"] is None else
          f"{100 * r['estimate']:+.2f} points, interval [{100 * r['ci'][0]:+.2f}, {100 * r['ci'][1]:+.2f}]"),
    # One per gate compared with the reference gate (for_gate); claim 3 is the article's, Gaussian's.
    Claim("gate_parity", "3", lambda c, r: "", "gate_parity", "gate_parity", "gate_parity", section="gate_parity"),
    # Claim 3 at Table 10's own setting, where the published 0.13-point effect was measured.
    Claim("anchor_parity", "3 (Table 10)", lambda c, r: "Gaussian as good as Bernoulli at input 0.2, hidden 0.5",
          "gate_parity", "anchor_parity", "gate_parity", params={"gate": "gaussian", "reference": REFERENCE_GATE}),
    Claim("inference", "", lambda c, r: f"MC over {(r or {}).get('k', c['inference']['k'])} masks = weight scaling",
          "inference", "monte_carlo", "inference"),
    Claim("conventions", "", lambda c, r: "mean-$p$ gates need scaling by $p$", "inference", "conventions",
          "conventions", estimate=_conventions_estimate),
)


def parity_gates(config: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The reference gate of the gate-parity grid and the gates judged against it (Gaussian's claim is always
    listed, so that the article's claim 3 has a row even where its grid did not run)."""
    experiment = config["claims"]["gate_parity"]["experiment"]
    gates = config["grids"].get(experiment, {}).get("gate_parity", {}).get("gates") or [REFERENCE_GATE, "gaussian"]
    return gates[0], ["gaussian"] + [g for g in gates[1:] if g != "gaussian"]


def for_gate(family: Claim, gate: str, reference: str) -> Claim:
    """The parity claim of one gate: numbered 3 for Gaussian (the article's claim), 3 with the gate's name for
    the others, so that a gate added to the grid renumbers no other claim."""
    number = "3" if gate == "gaussian" else f"3 ({gate_title(gate)})"
    return replace(family, key=parity_key(gate), number=number, params={"gate": gate, "reference": reference},
                   title=lambda c, r: f"{gate_title(gate)} as good as {gate_title(reference)}")


def registered(config: Mapping[str, Any]) -> list[Claim]:
    """Every claim of this configuration, in the verdict table's order (a family expanded per gate)."""
    reference, others = parity_gates(config)
    out: list[Claim] = []
    for claim in CLAIMS:
        if claim.key == "gate_parity":
            out += [for_gate(claim, gate, reference) for gate in others]
        else:
            out.append(claim)
    return out


def sections() -> list[str]:
    """Every paper section the claims write (the claims rule's outputs), in registry order."""
    return list(dict.fromkeys(claim.section for claim in CLAIMS if claim.section))
