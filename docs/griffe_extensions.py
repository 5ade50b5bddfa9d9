"""griffe extensions for the API pages (mkdocstrings reads the code statically; nothing is imported).

* :class:`RstRoles`: Sphinx roles in docstrings (:func:`~.gmm.fit_gmm`) become code spans (`gmm.fit_gmm`), which
  Markdown renders; the docstrings stay readable in an editor and in ``help()``.
* :class:`FieldComments`: the trailing ``# comment`` of a class field becomes its description, the convention of
  the settings dataclasses (``--help`` prints the same comment: ``paa_toolkit.engine.config.field_docs``), so the
  API pages and the command line describe a setting with one text.
"""

from __future__ import annotations

import functools
import io
import re
import tokenize
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):`~?\.?([^`]+)`")


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)


@functools.cache
def trailing_comments(path: Path) -> dict[int, tuple[str, str]]:
    """Line number → (the line, its trailing comment) for every line of ``path`` that ends in a comment."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    return {
        tok.start[0]: (lines[tok.start[0] - 1], tok.string.lstrip("# ").strip())
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }


class FieldComments(griffe.Extension):
    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        parent = attr.parent
        if attr.docstring is not None or parent is None or not parent.is_class or not attr.lineno:
            return
        line, comment = trailing_comments(Path(attr.filepath)).get(attr.lineno, ("", ""))
        if comment and re.match(rf"\s+{re.escape(attr.name)}\s*:", line):
            attr.docstring = griffe.Docstring(comment, lineno=attr.lineno, endlineno=attr.lineno, parent=attr)
