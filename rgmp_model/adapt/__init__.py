"""Training pairs simulated from labelled frames, their loss, and test-time adaptation (a copy of
the network fine-tuned on a stack's keyframes before propagating). The training package uses the
same pairs and loss for stage 1 and fine-tuning."""

from rgmp_model.adapt.adapt import AdaptOptions, AdaptationError, adapt_model

__all__ = ["AdaptOptions", "AdaptationError", "adapt_model"]
