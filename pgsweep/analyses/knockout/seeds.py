"""The seed of a model's random knockout orders, taken from its weights.

Each model gets its own random orders (two models never share them, as a fixed seed would
make them), and a rerun that trains the same weights draws the same orders.
"""

from __future__ import annotations

import hashlib

import numpy as np
from torch import nn


def weights_seed(network: nn.Module) -> int:
    """A 63-bit seed from the bytes of every parameter and buffer (state_dict order)."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1
