"""Constants shared by the library and the training code; importing this module is cheap (no torch).

``NETWORK_STRIDE``: the RGMP encoder downsamples by 32, so a frame's height and width must be
multiples of it (the propagation engine pads frames up to the next multiple; training crops are
checked against it). ``RGMP.stride`` exposes the same value on the network.

``ADAPT_ITERATIONS``: test-time adaptation's iterations when it is asked for without a number
(``rgmp propagate --adapt``, the Propagate dock's "adapt to the keyframes"); its time and what it
buys are measured in docs/benchmarks.md (``benchmarks/accuracy.py --adapt N``).
"""

NETWORK_STRIDE = 32
ADAPT_ITERATIONS = 25  # 37 s a DAVIS clip on the 2-core CPU (50: 75 s), within issue 21's 60 s (README)
