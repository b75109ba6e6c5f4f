"""Builds the optional compiled codec (msdbench/transports/_fastwire.pyx) with Cython.

Everything else is in pyproject.toml. Without Cython or a C compiler the build goes on without
the extension and msdbench runs its pure-Python codec (same wire, same limits, slower per call).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, not a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler at all
            print(f"msdbench: compiled codec not built ({e}); using the pure-Python codec")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"msdbench: {ext.name} not built ({e}); using the pure-Python codec")


try:
    from Cython.Build import cythonize

    extensions = cythonize([Extension("msdbench.transports._fastwire",
                                      ["msdbench/transports/_fastwire.pyx"])],
                           language_level=3, quiet=True)
except ImportError:
    extensions = []

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
