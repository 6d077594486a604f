"""Scores: DAVIS J (region similarity) and F (boundary accuracy), per object and sequence. No torch."""
