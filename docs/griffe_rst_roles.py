"""A griffe extension for the API pages: Sphinx roles in docstrings (:func:`~.gmm.fit_gmm`) become code
spans (`gmm.fit_gmm`), which Markdown renders; the docstrings stay readable in an editor and in ``help()``."""
from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):`~?\.?([^`]+)`")


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
