"""The CIFAR ResNet-18 of docs/protocol.md, section 3, with a width parameter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's AVX2 kernel for the backward pass of a strided 1x1 convolution on channels_last
# input with fewer input channels than its block of 8 writes past its workspace: the weight
# gradient comes out wrong and the threads can spin forever (uxlfoundation/oneDNN#6035).
NARROW_CHANNELS = 8


class Projection(nn.Conv2d):
    """The 1x1 strided shortcut convolution, computed in NCHW on the CPU when it is narrow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as Conv2d; a narrow CPU input avoids oneDNN's faulty channels_last path."""
        if x.device.type != "cpu" or self.in_channels >= NARROW_CHANNELS:
            return super().forward(x)
        # Both operands in NCHW strides: PyTorch picks channels_last if either one has them.
        weight = self.weight.clone(memory_format=torch.contiguous_format)
        return F.conv2d(x.contiguous(), weight, None, self.stride)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                Projection(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, stages of widths w, 2w, 4w, 8w."""

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"width: must be a positive integer, got {width!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: must be an integer >= 2, got {num_classes!r}")
        self.width = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, c_in = [], width
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * width, num_classes)

    @property
    def feature_dim(self) -> int:
        """Dimension of the penultimate feature (8w)."""
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the pooled vector that enters the linear head."""
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.head(self.features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) in one pass."""
        h = self.features(x)
        return h, self.head(h)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
