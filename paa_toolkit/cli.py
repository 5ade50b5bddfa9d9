"""The command lines' shared plumbing: config overrides as options, and user errors as one line.

    cfg = parse_args(["--lr", "0.02", "--model.aux", "centerness", "--config", "exp.yaml"])
    sys.exit(run_cli(lambda: train(cfg)))      # error: … on stderr and exit code 1 for a user error

Every config field can be set as ``--<section>.<field> VALUE`` (``--solver.lr 0.02``,
``--model.min_size [224,288]``); a few common ones have short aliases (:data:`ALIASES`: ``--lr``,
``--max-iters``, ``--rule``...). Precedence: defaults (or ``--budget NAME``'s recipe) < ``--config`` file <
command line. Options must be spelled out: no parser here accepts an abbreviation (``--max`` is an error,
not ``--max-iters``). The config itself — dataclasses, defaults, validation — is
:mod:`paa_toolkit.engine.config`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

import yaml

from .assign import describe_rules
from .engine import presets
from .engine.config import (
    CHOICES,
    SECTIONS,
    ConfigError,
    TrainConfig,
    apply_dict,
    field_docs,
    load_config_file,
    set_field,
    validate,
)
from .engine.loop import NonFiniteLossError

#: short command-line aliases → dotted field names
ALIASES = {
    "--lr": "solver.lr",
    "--max-iters": "solver.max_iters",
    "--batch-size": "data.batch_size",
    "--dataset": "data.dataset",
    "--data-root": "data.root",
    "--rule": "assign.rule",
    "--backbone": "model.backbone",
    "--backbone-weights": "model.backbone_weights",
    "--aux": "model.aux",
    "--arch": "model.arch",
    "--output-dir": "output_dir",
    "--device": "device",
    "--seed": "seed",
    "--name": "name",
}


# ---- config overrides ------------------------------------------------------------------------------
def _dotted_fields() -> list[tuple[str, Field]]:
    """All ``(dotted name, field)`` pairs: top-level fields and ``section.field``."""
    out = []
    for f in fields(TrainConfig):
        if f.name in SECTIONS:
            out += [(f"{f.name}.{g.name}", g) for g in fields(SECTIONS[f.name])]
        else:
            out.append((f.name, f))
    return out


def _value(cfg: TrainConfig, dotted: str) -> Any:
    section, _, name = dotted.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def dotted_overrides(cfg: TrainConfig, base: TrainConfig | None = None) -> dict[str, Any]:
    """The fields in which ``cfg`` differs from ``base`` (default: the defaults), by dotted name: the
    overrides (``--<dotted> VALUE``, :func:`~.engine.config.set_field`) that turn ``base`` into ``cfg``."""
    base = base if base is not None else TrainConfig()
    return {
        dotted: _value(cfg, dotted) for dotted, _ in _dotted_fields() if _value(cfg, dotted) != _value(base, dotted)
    }


def _show(value: Any) -> str:
    """A default as one would type it: none, true/false, 0.333333, [0.666667, 0.888889]."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return f"[{', '.join(_show(v) for v in value)}]"
    return str(value)


def _help(dotted: str, f: Field, default: Any) -> str:
    """An option's line of ``--help``: the field's comment (:func:`~.engine.config.field_docs`), its
    choices, its default and what is derived from it."""
    section = dotted.split(".")[0] if "." in dotted else None
    text = field_docs(SECTIONS[section] if section else TrainConfig).get(f.name, "")
    if dotted in CHOICES:
        text += f" [{', '.join(CHOICES[dotted])}]"
    elif isinstance(default, bool):
        text += " [true, false; alone: true]"
    text += f" (default: {_show(default)})"
    if dotted in DERIVED:
        text += f"; {DERIVED[dotted](TrainConfig())}"
    return text.replace("%", "%%")  # argparse %-formats help strings


#: what the run derives from a field, explained in ``--help`` (the training log prints the run's own values)
DERIVED: dict[str, Callable[[TrainConfig], str]] = {
    "solver.lr": lambda cfg: (
        f"the default run trains at {cfg.solver.scaled_lr(cfg.data.batch_size):g} = "
        f"{cfg.solver.lr:g} × data.batch_size {cfg.data.batch_size} / "
        f"solver.reference_batch_size {cfg.solver.reference_batch_size} (× processes)"
    ),
}


def add_override_arguments(parser: argparse.ArgumentParser, prefixes: tuple[str, ...] | None = None) -> None:
    """Add ``--section.field`` (and ``--section.field-with-dashes``) options plus the short aliases,
    one ``--help`` group per section (model, assign, test, data, solver, run).

    ``prefixes`` restricts them to some sections (e.g. ``("data",)``); values land in the namespace
    under their dotted name, only when given (``argparse.SUPPRESS``).
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for dotted, f in _dotted_fields():
        if prefixes is not None and dotted.split(".")[0] not in prefixes:
            continue
        section = dotted.split(".")[0] if "." in dotted else "run"
        if section not in groups:
            cls = SECTIONS.get(section, TrainConfig)
            summary = re.split(r"\.\s+[A-Z`]| — ", " ".join((cls.__doc__ or "").split()))[0].rstrip(".")
            groups[section] = parser.add_argument_group(
                f"{section} (--{section}.<field>)" if section != "run" else "run (--<field>)", summary
            )
        dashed = f"--{dotted.replace('_', '-')}"
        aliases = [alias for alias, target in ALIASES.items() if target == dotted]
        names = list(dict.fromkeys([f"--{dotted}", dashed, *aliases]))  # each spelling once
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        is_bool = isinstance(default, bool)
        action = groups[section].add_argument(
            *names,
            dest=dotted,
            default=argparse.SUPPRESS,
            metavar="BOOL" if is_bool else "VALUE",
            nargs="?" if is_bool or dotted == "resume" else None,
            const="true" if is_bool else ("auto" if dotted == "resume" else None),
            help=_help(dotted, f, default),
        )
        action.unlisted = {dashed} - {f"--{dotted}", *aliases}  # accepted, left out of --help


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` that fits 80 columns: each option's spellings once and its value once
    (``--solver.lr, --lr VALUE``); the spellings with dashes for underscores work but are not listed."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Descriptions keep their lines (the list of assignment rules), each wrapped with a hanging indent."""
        hang = "    " if "\n" in text.strip() else ""
        return "\n".join(
            textwrap.fill(" ".join(line.split()), width, initial_indent=indent, subsequent_indent=indent + hang)
            for line in text.splitlines()
        )

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if s not in getattr(action, "unlisted", ())]
        return f"{', '.join(shown)} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


EPILOG = (
    "Every field is --<section>.<field> VALUE (dashes for underscores work too); lists as [a,b] or a,b; "
    "none for no value. Precedence: defaults (or --budget) < --config file < command line."
)


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    usage = (
        "%(prog)s [--budget NAME] [--config FILE]\n"
        "       [--print-config] [--<section>.<field> VALUE ...] [--lr LR] ..."
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        usage=usage,
        allow_abbrev=False,
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument(
        "--budget",
        metavar="NAME",
        choices=sorted(presets.BUDGETS),
        help="start from a named recipe instead of the defaults (those of python -m paa_toolkit.ablate --budget; "
        "bench: 128 px, P2-P6, 2,400 iterations, the model make demo trains): %(choices)s",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML/JSON file of overrides (the command line wins)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    add_override_arguments(parser)
    parser.add_argument_group("assignment rules (--assign.rule)", describe_rules())
    return parser


def config_from_namespace(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Defaults (or ``base``, or the recipe ``args.budget``) < ``args.config`` file < dotted options in ``args``;
    then :func:`validate`."""
    if getattr(args, "budget", None):
        base = presets.budget(args.budget)
    cfg = base if base is not None else TrainConfig()
    if getattr(args, "config", None):
        apply_dict(cfg, load_config_file(args.config), source=str(args.config))
    known = {dotted for dotted, _ in _dotted_fields()}
    for key, value in vars(args).items():
        if key in known:
            set_field(cfg, key, value)
    return validate(cfg)


def parse_args(argv: list[str] | None = None, prog: str = "python -m paa_toolkit.train") -> TrainConfig:
    """The training command line → a validated :class:`TrainConfig`; a bad value exits with ``error:`` (code 2)."""
    parser = build_parser(prog, "Train a PAA detector (defaults: the embedded synthetic dataset on CPU).")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_namespace(args)
    except ConfigError as e:
        parser.error(str(e))
    if args.print_config:
        yaml.safe_dump(cfg.to_dict(), sys.stdout, sort_keys=False)
        parser.exit(0)
    return cfg


# ---- user errors ---------------------------------------------------------------------------------
#: what a user can cause (bad path, bad file, bad value, diverging run): one line, no traceback
USER_ERRORS = (ValueError, OSError, NonFiniteLossError)


def user_message(error: BaseException) -> str:
    """One line for a user error; an error re-raised by a DataLoader worker (whose message is
    "Caught … in DataLoader worker …" plus the worker's traceback) gives the original message."""
    text = str(error)
    if isinstance(error, OSError) and error.filename and error.strerror:  # "[Errno 13] Permission denied: 'x'"
        text = f"{error.filename}: {error.strerror}"
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def run_cli(work: Callable[[], None], on_interrupt: str = "interrupted") -> int:
    """Run an entry point's body: 0 on success; a user error → ``error: …`` on stderr and 1;
    Ctrl-C / SIGTERM → ``on_interrupt`` (and what the training saved) and 128 + the signal number.

    Set ``PAA_DEBUG=1`` to get the full traceback instead.
    """
    try:
        work()
    except USER_ERRORS as e:
        if os.environ.get("PAA_DEBUG"):
            raise
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"{on_interrupt} ({e})" if str(e) else on_interrupt, file=sys.stderr)
        return 128 + (getattr(e, "signum", None) or signal.SIGINT)
    return 0


__all__ = [
    "ALIASES",
    "DERIVED",
    "USER_ERRORS",
    "HelpFormatter",
    "add_override_arguments",
    "build_parser",
    "config_from_namespace",
    "dotted_overrides",
    "parse_args",
    "run_cli",
    "user_message",
]
