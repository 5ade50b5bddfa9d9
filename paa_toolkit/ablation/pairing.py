"""Whether two rows' runs of one seed may be paired: the same start, or only the same seed number.

A paired difference (row − reference, seed by seed) cancels what the rows share: the seed's initial weights, its
data order and, with ``model.backbone_pretrain``, the pre-trained body. That body is a cached file, and a rebuilt
one has the same name and other weights (benchmarks/README.md §8: AP 0.642 against 0.626), which moves every row
trained on it by a point or two. So:

* **Not paired** — the two runs started from different pre-trained bodies (their ``provenance.json`` digests
  differ), or one side's body is unknown (a seed trained before provenance was recorded) and the two seeds come
  from different sources (a committed file carried with ``--carry`` and this grid, or two different files). The
  seed is left out of the paired difference and the report says why. Where the recorded side trained from
  scratch there is no body to differ: the rows of one report share their budget (``--carry`` checks it).
* **Paired, with a caveat** — the same body, but another toolkit code, torch, device, thread count or precision.
  Those move a CPU training's trajectory as another seed would (thread count: 0.3 AP points on the pre-training),
  so the difference stays unbiased unless the code change was one of behaviour; the report lists them.

    problem = pairing_problem(row_seed, reference_seed)   # None, or "pre-trained body sha256:… ≠ sha256:…"
    caveats = pairing_caveats(row_seed, reference_seed)   # ["threads 1 ≠ 2"]
"""

from __future__ import annotations

from typing import Any

#: provenance fields that change a trajectory the way another seed would: listed, not unpaired
CAVEAT_FIELDS = ("toolkit_code", "torch", "device", "threads", "precision")
TRAINED_HERE = "this grid"
#: the recorded ``backbone_weights`` of a run without a pre-trained body
FROM_SCRATCH = "None"


def _values(seed: dict[str, Any], key: str) -> str | None:
    """The field over the seed's provenance records (a resumed run may have several), or None when unknown."""
    records = seed.get("provenance")
    if not records:
        return None
    return " + ".join(sorted({str(r.get(key)) for r in records}))


def _body(seed: dict[str, Any]) -> str | None:
    """The pre-trained body the seed started from (its first record), or None when unknown: a resume restores
    its weights from the run's own checkpoint, not from the body."""
    records = seed.get("provenance")
    return str(records[0].get("backbone_weights")) if records else None


def source(seed: dict[str, Any]) -> str:
    """Where the seed was trained: a carried results file (``carried_from``) or this grid."""
    return seed.get("carried_from") or TRAINED_HERE


def pairing_problem(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why seeds ``a`` and ``b`` (:func:`~.report.seed_result` dicts) must not be paired, or None when they may."""
    body_a, body_b = _body(a), _body(b)
    if body_a is not None and body_b is not None:
        return None if body_a == body_b else f"pre-trained body {body_a} ≠ {body_b}"
    if FROM_SCRATCH in (body_a, body_b):  # one grid, one budget (--carry checks it): neither run had a body
        return None
    if source(a) != source(b):
        return f"trained apart ({source(a)} / {source(b)}) and the body of one is not recorded"
    return None


def pairing_caveats(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The provenance fields, besides the body, on which two paired seeds differ (both recorded)."""
    out = []
    for key in CAVEAT_FIELDS:
        value_a, value_b = _values(a, key), _values(b, key)
        if value_a is not None and value_b is not None and value_a != value_b:
            out.append(f"{key} {value_a} ≠ {value_b}")
    return out


__all__ = ["CAVEAT_FIELDS", "TRAINED_HERE", "pairing_caveats", "pairing_problem", "source"]
