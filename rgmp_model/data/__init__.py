"""Synthetic sequences with exact labels: video, microscopy, realistic fluorescence; writing them
to disk. No torch."""
