"""The network: RGMP (encoder seam, decoder), its encoders, the checkpoint loader and the models
found on this machine (bundled and user folder)."""
