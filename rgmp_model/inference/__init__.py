"""Propagation: frozen options, the session factory, the engine (one session per stack), the
per-frame propagators, region mode, flow guidance and the frame/label conventions they share."""
