"""The compiled readers (``extractor/_speedups.pyx``), built with the package: ``pip install .``
compiles them with Cython against the lxml it installs. Where that fails (no C compiler, no
Python headers) the package still installs, with the pure-Python parser; the build says so
(``pip install -v`` shows it) and so do ``extractor --version`` and every run.

Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NOTE = (
    "extractor: the compiled readers were not built ({reason}); the pure-Python parser will "
    "be used, 2-3x slower. Install a C compiler and the Python headers (e.g. apt-get install "
    "gcc python3-dev) and reinstall to get them."
)


class OptionalBuildExt(build_ext):
    """``build_ext`` that leaves the readers out, and says why, rather than fail the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler surfaces here as one of several errors
            self._skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(exc)

    def _skipped(self, exc: Exception) -> None:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # a warning: pip shows those of a build backend even when it hides the build's output
        warnings.warn(NOTE.format(reason=reason), SkippedReaders, stacklevel=1)


class SkippedReaders(UserWarning):
    """The compiled readers were left out of the build."""


def _extensions() -> list[Extension]:
    try:
        import lxml
        from Cython.Build import cythonize
    except ImportError as exc:  # only without build isolation: pyproject requires both
        sys.stderr.write(NOTE.format(reason=f"{exc.name} is not installed for the build") + "\n")
        return []
    extension = Extension(
        "extractor._speedups", ["extractor/_speedups.pyx"], include_dirs=lxml.get_include()
    )
    return list(cythonize([extension], quiet=True, language_level=3))


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
