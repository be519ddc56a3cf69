"""The compiled relay data path (engine/runtime/_fastloop.c) and the prctl/capset calls
(engine/runtime/_privcalls.c); everything else is pyproject.toml.

Built by `pip install -e .` / `pip install .` like any C extension (needs gcc and the Python
headers: python3-dev on Debian).  docs/performance.md, "Compiled fast path", says why.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "engine.runtime._fastloop",
            sources=["engine/runtime/_fastloop.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
        ),
        Extension(
            "engine.runtime._privcalls",
            sources=["engine/runtime/_privcalls.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
        ),
    ]
)
