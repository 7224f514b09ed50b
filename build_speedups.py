"""Build the optional C readers in place (``make install`` runs this; failure is not fatal)."""

from __future__ import annotations

import lxml
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="extractor-speedups",
    ext_modules=cythonize(
        [
            Extension(
                "extractor._speedups",
                ["extractor/_speedups.pyx"],
                include_dirs=lxml.get_include(),
            )
        ],
        quiet=True,
    ),
    script_args=["build_ext", "--inplace"],
)
