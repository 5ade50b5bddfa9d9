"""The one table of assignment rules: a name → its settings, its assigner, its replay, how it is shown.

    rule = get_rule("tal")               # the :class:`Rule` registered under "tal"
    assigner = rule.build(cfg)           # cfg: an AssignConfig (every rule's settings, one flat dataclass)
    rule_names()                         # the choices of ``--assign.rule``, in registration order

A rule is one module that calls :func:`register` once per name it answers to (PAA answers to six: the
boundaries of Fig. 3 (a)–(d), FNP and FSR). Its settings are a small dataclass whose fields, each with a
trailing ``# comment`` (``--help`` prints it), become fields of :class:`~.config.AssignConfig` and so
``--assign.<field>`` options. A field belongs to one settings class: rules that share a setting share
the class (ATSS and max-IoU take PAA's K from :class:`~.candidates.CandidateSettings`).

Nothing outside the rule modules compares a rule's name: validation, ``build_assigner``, the replay,
the explorers and the tables ask this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One assignment rule as the rest of the toolkit sees it."""

    name: str  # the value of --assign.rule
    title: str  # how figures, explorers and tables name it ("PAA (c)", "TAL")
    description: str  # one line for --help: what the rule does, with the equation it implements
    settings: type  # its settings dataclass; the fields join AssignConfig (shared classes: shared fields)
    build: Callable[[Any], Any]  # AssignConfig → the assigner (an :class:`~.base.Assigner`)
    uses: tuple[str, ...] = ()  # the AssignConfig fields it reads (the explorers enable those controls)
    values: str = "candidate_cost"  # the diagnostics field the explorers histogram for one GT
    values_label: str | None = None  # that axis' label (None: the anchor cost of Eq. 3)
    boundary: str = "boundary"  # the diagnostics field with the boundary in the units of ``values``
    replayable: bool = True  # a trace (anchors, GTs, predictions) is enough to assign it again
    # exact replay from a snapshot's recorded candidates: (own settings, new settings, diagnostics, [B, A])
    # → Assignment, or None when the recorded candidates do not serve (PAA: same K, λ and matcher)
    reseparate: Callable[..., Any] | None = None


_TABLE: dict[str, Rule] = {}


def register(*rules: Rule) -> None:
    """Add ``rules`` to the table; a name taken twice, or a settings field that two unrelated settings
    classes declare, raises ``ValueError`` (the flat ``--assign.<field>`` namespace must stay unambiguous)."""
    for rule in rules:
        if rule.name in _TABLE:
            raise ValueError(f"assignment rule {rule.name!r} is registered twice")
        if not is_dataclass(rule.settings):
            raise ValueError(f"rule {rule.name!r}: settings must be a dataclass, got {rule.settings!r}")
        owners = {f.name: _declaring_class(cls, f.name) for cls in settings_classes() for f in fields(cls)}
        for f in fields(rule.settings):
            owner = owners.get(f.name)
            if owner is not None and owner is not _declaring_class(rule.settings, f.name):
                raise ValueError(f"rule {rule.name!r}: setting {f.name!r} is already declared by {owner.__name__}")
        unknown = set(rule.uses) - {f.name for f in fields(rule.settings)}
        if unknown:
            raise ValueError(f"rule {rule.name!r} uses settings its class lacks: {sorted(unknown)}")
        _TABLE[rule.name] = rule


def _declaring_class(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO whose own annotations declare field ``name``."""
    return next(base for base in cls.__mro__ if name in vars(base).get("__annotations__", {}))


def get_rule(name: str) -> Rule:
    """The rule registered under ``name``; ``ValueError`` listing the valid choices otherwise."""
    if name not in _TABLE:
        raise ValueError(f"unknown rule {name!r}; valid choices: {', '.join(_TABLE)}")
    return _TABLE[name]


def rule_names() -> tuple[str, ...]:
    """Every registered rule name, in registration order (the choices of ``--assign.rule``)."""
    return tuple(_TABLE)


def rules() -> tuple[Rule, ...]:
    """Every registered rule, in registration order."""
    return tuple(_TABLE.values())


def settings_classes() -> tuple[type, ...]:
    """The bases of :class:`~.config.AssignConfig`: the distinct settings classes, last registered first (so
    that the dataclass lists the first rule's fields first), none that is a base of another (a shared base
    such as ``CandidateSettings`` comes in through its subclass)."""
    distinct = list(dict.fromkeys(rule.settings for rule in _TABLE.values()))
    leaves = [c for c in distinct if not any(o is not c and issubclass(o, c) for o in distinct)]
    return tuple(reversed(leaves))


def settings_problems(settings: Any) -> list[str]:
    """What is wrong with the values of ``settings`` (an AssignConfig): each settings class checks its own
    fields in its ``problems`` method (a subclass calls its base's); messages name the field."""
    return [text for cls in reversed(settings_classes()) for text in cls.problems(settings)]


def describe_rules() -> str:
    """One line per rule for ``--help``: ``name: description``."""
    return "\n".join(f"{rule.name}: {rule.description}" for rule in _TABLE.values())


__all__ = [
    "Rule",
    "describe_rules",
    "get_rule",
    "register",
    "rule_names",
    "rules",
    "settings_classes",
    "settings_problems",
]
