"""A faster, exact input gradient for small CPU convolutions, used inside PG backward passes.

The input gradient of a stride-1 convolution is itself a convolution: of the output
gradient with the weight flipped in space and its in/out channels swapped, padded by
dilation * (kernel - 1) - padding. oneDNN's forward kernel runs that about 1.5-2x
faster than its backward-data kernel at the thesis convnet's channel counts (5-10),
and the backward passes of a PG query are mostly these convolutions. Only the ops of
our own backward calls see this mode; every other op passes through unchanged.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_CONV_BACKWARD = torch.ops.aten.convolution_backward.default
_CONV = torch.ops.aten.convolution.default
MAX_CHANNELS = 32  # measured: no gain at ResNet widths (64+), a clear one at 5-10


class ConvInputGradAsForward(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self._flipped: dict[tuple[int, int], torch.Tensor] = {}

    def _applies(self, grad_output, weight, stride, padding, dilation, transposed, groups, mask) -> bool:
        kernel = weight.shape[2:]
        return (
            mask[0] and not mask[1] and not mask[2]  # only the input gradient is asked for
            and not transposed
            and grad_output.device.type == "cpu"
            and all(s == 1 for s in stride)
            and max(weight.shape[0], weight.shape[1] * groups) <= MAX_CHANNELS
            and all(p <= d * (k - 1) for p, d, k in zip(padding, dilation, kernel))
            and grad_output.is_contiguous()
            and weight.is_contiguous()
        )

    def _flip(self, weight: torch.Tensor, groups: int) -> torch.Tensor:
        """(out, in/groups, *k) -> (in, out/groups, *k), spatially flipped; cached per call."""
        key = (id(weight), weight._version)
        if key not in self._flipped:
            out_channels, in_per_group, kernel = weight.shape[0], weight.shape[1], weight.shape[2:]
            self._flipped[key] = (
                weight.reshape(groups, out_channels // groups, in_per_group, *kernel)
                .transpose(1, 2)
                .reshape(groups * in_per_group, out_channels // groups, *kernel)
                .flip(list(range(2, weight.dim())))
                .contiguous()
            )
        return self._flipped[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _CONV_BACKWARD and not kwargs:
            grad_output, _input, weight, _bias, stride, padding, dilation, transposed, _, groups, mask = args
            if self._applies(grad_output, weight, stride, padding, dilation, transposed, groups, mask):
                kernel = weight.shape[2:]
                full_padding = [d * (k - 1) - p for p, d, k in zip(padding, dilation, kernel)]
                grad_input = _CONV(
                    grad_output, self._flip(weight, groups), None, [1] * len(kernel), full_padding,
                    list(dilation), False, [0] * len(kernel), groups,
                )
                return grad_input, None, None
        return func(*args, **(kwargs or {}))


def helps(model: torch.nn.Module) -> bool:
    """Does `model` have a convolution the mode would speed up? Without one, PG backward passes
    skip the mode: it intercepts every op of the backward (measured on ResNet-18, whose
    convolutions are all too wide, as 1-2% of the PG time for nothing)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd) and not module.transposed:
            if all(s == 1 for s in module.stride) and max(module.out_channels, module.in_channels) <= MAX_CHANNELS:
                return True
    return False
