"""Reference networks: hand-set tiny nets with exact answers, an MLP, torchvision-style ResNets.

torchvision itself is not a dependency (its PyPI wheel does not import beside the
pinned CPU torch), so the ResNet here follows torchvision's BasicBlock layout,
including its habit of calling one ReLU module twice in a block.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def hand_set_mlp() -> nn.Sequential:
    """x (B, 2) -> fc1 -> tanh (act1) -> fc2 -> logits (B, 3), weights written out.

    d z / d act1 = fc2.weight exactly, and d z / d x = W2 diag(1 - act1^2) W1.
    """
    net = nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(2, 2)),
        ("act1", nn.Tanh()),
        ("fc2", nn.Linear(2, 3)),
    ]))
    with torch.no_grad():
        net.fc1.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        net.fc1.bias.copy_(torch.tensor([0.1, -0.2]))
        net.fc2.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.25]]))
        net.fc2.bias.copy_(torch.tensor([0.0, 0.3, -0.1]))
    return net.eval()


def hand_set_convnet() -> nn.Sequential:
    """x (B, 1, 5, 5) -> conv 2 filters 2x2 -> tanh -> 2x2 max pool -> fc -> 3 logits."""
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 2, 2)),
        ("act1", nn.Tanh()),
        ("pool1", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(8, 3)),
    ]))
    with torch.no_grad():
        net.conv1.weight.copy_(torch.tensor([[[[1.0, -1.0], [0.5, 0.25]]], [[[-0.5, 1.0], [1.0, -0.75]]]]))
        net.conv1.bias.copy_(torch.tensor([0.05, -0.1]))
        net.fc1.weight.copy_(torch.linspace(-1.0, 1.0, 24).reshape(3, 8))
        net.fc1.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))
    return net.eval()


def mlp(in_features: int = 12, hidden: tuple[int, ...] = (16, 10), num_classes: int = 5) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(in_features, width)
        layers[f"act{i}"] = nn.ReLU()
        in_features = width
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(in_features, num_classes)
    return nn.Sequential(layers)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: note `self.relu` is called twice in forward."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A torchvision-style ResNet for small inputs; resnet(blocks=(2, 2, 2, 2)) is ResNet-18."""

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        planes = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths), start=1):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(*[
                BasicBlock(planes if j == 0 else width, width, stride if j == 0 else 1) for j in range(count)
            ])
            setattr(self, f"layer{i}", layer)
            planes = width
        self.depth = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, w0, H, W)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, num_classes)


def resnet18(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels, num_classes)


def tiny_resnet(in_channels: int = 3, num_classes: int = 6) -> ResNet:
    return ResNet((2, 1), (8, 12), in_channels, num_classes)


class ResidualBlock(nn.Module):
    """A residual block with its own module for each ReLU (no reuse), so both can be analysed."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.act2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """(B, 3, S, S) -> (B, classes): stem, two residual stages (16 and 32 channels), pooling, fc."""

    def __init__(self, num_classes: int = 10, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.layer1 = nn.Sequential(ResidualBlock(width, width))
        self.layer2 = nn.Sequential(ResidualBlock(width, 2 * width, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.act(self.bn(self.conv(x)))))  # (B, 2w, S/2, S/2)
        return self.fc(self.flatten(self.pool(x)))


class ReusedReLUResNet(SmallResNet):
    """torchvision's habit: one ReLU module called twice (the stem's `act` again after layer1)."""

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        x = self.act(self.layer1(x))
        return self.fc(self.flatten(self.pool(self.layer2(x))))


class FeaturesResNet(SmallResNet):
    """Returns its pooled features (B, 2w, 1, 1), not logits: a net pgsweep must refuse."""

    def forward(self, x):
        return self.pool(self.layer2(self.layer1(self.act(self.bn(self.conv(x))))))


def small_resnet(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> SmallResNet:
    """The benchmarks' small ResNet: two residual stages, batch norm, ReLU, every module used once."""
    return SmallResNet(num_classes, width, in_channels)


def with_batch_norm_statistics(net: nn.Module, mean: float = 0.2, var: tuple[float, float] = (0.5, 1.5)) -> nn.Module:
    """The net in eval mode, its batch norms given random statistics and affine weights that
    are not the identity (a fresh batch norm in eval mode changes nothing): running mean in
    [-mean, mean], running variance in `var`, scale in [0.5, 1.5], shift in [-0.2, 0.2]."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-mean, mean)
                module.running_var.uniform_(*var)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


# Weights of hand_set_knockout_net's output layer: class 0 reads filter 0, class 1 filter 1,
# both read filter 2 a little. d logit_c / d act1[k] = KNOCKOUT_WEIGHTS[c, k] / 4 at each of the
# 4 positions, so the logit-PG L2 score of filter k for class c is |KNOCKOUT_WEIGHTS[c, k]| / 2.
KNOCKOUT_WEIGHTS = ((2.0, 0.0, 0.5), (0.0, 2.0, 0.5))


def hand_set_knockout_net() -> nn.Sequential:
    """x (B, 3, 2, 2) -> 1x1 identity conv -> ReLU (act1) -> 2x2 mean -> fc -> 2 logits.

    act1 channel k is input channel k (clipped at 0), so an image that is bright in channel
    0 is class 0 exactly while filter 0 is intact: knocking out filter 0 flips it, filter 1
    or 2 alone does not (see `knockout_images`).
    """
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 3, 1)),
        ("act1", nn.ReLU()),
        ("pool1", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(3, 2)),
    ]))
    with torch.no_grad():
        net.conv1.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        net.conv1.bias.zero_()
        net.fc1.weight.copy_(torch.tensor(KNOCKOUT_WEIGHTS))
        net.fc1.bias.zero_()
    return net.eval()


def knockout_images(per_class: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Images for hand_set_knockout_net: class c is bright (1.0 + small) in channel c, dim (0.2)
    in the other, 1.0 in channel 2. Logits: own class 2.5 + ..., other 0.9 + ...; without
    the own filter the own logit drops to 0.5 and the image is misclassified."""
    images, labels = [], []
    for c in (0, 1):
        for i in range(per_class):
            x = torch.full((3, 2, 2), 0.2)
            x[c] = 1.0 + 0.1 * i
            x[2] = 1.0
            x[2, 0, 0] += 0.05 * i  # images differ, so activations are not all alike
            images.append(x)
            labels.append(c)
    return torch.stack(images), torch.tensor(labels)
