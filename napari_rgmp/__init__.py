"""napari plugin for RGMP label propagation.

Importing this package is cheap: torch is only imported by the widgets when they run.
"""

__version__ = "0.1.0"
