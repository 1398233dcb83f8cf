"""The LightningModule that trains any classifier returning logits (plain SGD by default)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training; logs `{stage}_loss` and `{stage}_error` (means over the epoch's
    images) once per epoch."""

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
        self._sums: dict[str, torch.Tensor] = {}  # stage -> this epoch's (loss x images, errors, images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, batch_idx: int,
              batches: float) -> torch.Tensor:
        images, labels = batch
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.network(images)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels)
        # the epoch's sums here, one self.log per metric at its last batch: a self.log per
        # batch cost about a tenth of the thesis convnet's training time
        with torch.no_grad():
            step = torch.stack([loss.detach().double() * labels.shape[0],
                                (logits.argmax(dim=1) != labels).sum().double(),
                                torch.tensor(float(labels.shape[0]), dtype=torch.float64, device=loss.device)])
        if batches == float("inf"):  # a loader without a length: no last batch to wait for
            self._log_means(stage, loss, step[1] / labels.shape[0], labels.shape[0])
            return loss
        sums = self._sums[stage] = self._sums[stage] + step if stage in self._sums else step
        if batch_idx + 1 >= batches:
            del self._sums[stage]
            loss_sum, wrong, size = sums.tolist()
            self._log_means(stage, loss_sum / size, wrong / size, 1)
        return loss

    def _log_means(self, stage: str, loss, error, batch_size: int) -> None:
        # Lightning averages what is logged over the epoch, weighted by batch_size
        for name, value in (("loss", loss), ("error", error)):
            self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, batch_size=batch_size, prog_bar=True)

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._step(batch, "train", batch_idx, self.trainer.num_training_batches)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        self._step(batch, self.heldout_name, batch_idx, self._count(self.trainer.num_val_batches, dataloader_idx))

    def test_step(self, batch, batch_idx, dataloader_idx=0):  # noqa: D102
        self._step(batch, "test", batch_idx, self._count(self.trainer.num_test_batches, dataloader_idx))

    @staticmethod
    def _count(batches, dataloader_idx: int) -> float:
        # Lightning's count of an epoch's batches: a list per loader, inf for a loader without a length
        return float(batches[dataloader_idx] if isinstance(batches, (list, tuple)) else batches)

    def on_train_epoch_start(self) -> None:  # noqa: D102  (an interrupted epoch's sums do not carry over)
        self._sums.pop("train", None)

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.SGD(
            self.network.parameters(),
            lr=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
