"""Training of RGMP models (static pre-training, video training, fine-tuning on a user stack)."""
