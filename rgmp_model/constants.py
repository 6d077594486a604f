"""Constants shared by the library and the training code; importing this module is cheap (no torch).

``NETWORK_STRIDE``: the RGMP encoder downsamples by 32, so a frame's height and width must be
multiples of it (the propagation engine pads frames up to the next multiple; training crops are
checked against it). ``RGMP.stride`` exposes the same value on the network.
"""

NETWORK_STRIDE = 32
