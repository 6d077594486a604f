"""napari plugin for RGMP label propagation.

Importing this package is cheap: torch is only imported by the widgets when they open.
"""

import sys as _sys

from rgmp_model import __version__  # noqa: F401 - written once, in rgmp_model (pyproject reads it there)

if "napari" in _sys.modules and "triton" not in _sys.modules:
    # torchvision imports triton (through torch._dynamo), and triton's bundled LLVM crashes a
    # process whose OpenGL already runs on Mesa's LLVM (llvmpipe, radeonsi) with a segfault as
    # soon as a widget loads. The plugin never uses torch.compile, so inside napari triton
    # stays out (torch then reports it as not installed).
    _sys.modules["triton"] = None  # type: ignore[assignment]
