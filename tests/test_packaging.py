"""pyproject.toml: metadata that current setuptools reads without a deprecation warning."""

import warnings
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_licence_is_an_spdx_string_read_without_a_deprecation_warning():
    assert isinstance(tomllib.loads(PYPROJECT.read_text())["project"]["license"], str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SetuptoolsDeprecationWarning for the table form
        dist = Distribution()
        apply_configuration(dist, PYPROJECT)
    assert dist.metadata.license_expression == "MIT"


def test_every_entry_point_module_exists():
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    for target in scripts.values():
        module = target.split(":")[0]
        assert (PYPROJECT.parent / (module.replace(".", "/") + ".py")).is_file(), target
