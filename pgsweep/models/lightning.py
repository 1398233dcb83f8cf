"""The LightningModule that trains any classifier returning logits (plain SGD by default)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training; logs `{stage}_loss` and `{stage}_error` once per epoch."""

    def __init__(
        self,
        network: nn.Module,
        learning_rate: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        heldout_name: str = "val",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        # the split the per-epoch held-out curve runs on: "val", or "test" when there is no val split
        self.heldout_name = heldout_name
        # image batches in channels-last memory, as the network's weights (pgsweep.stages.train)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.network(images)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
        error = (logits.argmax(dim=1) != labels).float().mean()
        size = labels.shape[0]
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=size, prog_bar=True)
        self.log(f"{stage}_error", error, on_step=False, on_epoch=True, batch_size=size, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, self.heldout_name)

    def test_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "test")

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.SGD(
            self.network.parameters(),
            lr=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
