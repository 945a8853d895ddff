"""The CIFAR ResNet-18: shapes, parameter count, features feeding the head."""

from __future__ import annotations

import pytest
import torch

from nbutils.models import ResNet18, count_parameters


def test_standard_width_has_11m_parameters_and_512d_features() -> None:
    model = ResNet18(10, width=64)
    assert 11_150_000 < count_parameters(model) < 11_200_000
    assert model.feature_dim == 512


@pytest.mark.parametrize("width, classes", [(4, 5), (8, 10), (16, 20)])
def test_shapes(width: int, classes: int) -> None:
    model = ResNet18(classes, width=width).eval()
    x = torch.randn(3, 3, 32, 32)
    h, logits = model.forward_with_features(x)
    assert h.shape == (3, 8 * width) and logits.shape == (3, classes)
    assert torch.allclose(model(x), logits)
    assert torch.allclose(model.head(model.features(x)), logits)
    assert (h >= 0).all()  # pooled after a ReLU


def test_stem_keeps_resolution_and_no_maxpool() -> None:
    model = ResNet18(5, width=4)
    assert model.stem[0].stride == (1, 1) and model.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("width", [0, -1, 2.5, "8"])
def test_bad_width(width) -> None:
    with pytest.raises(ValueError, match="width"):
        ResNet18(5, width=width)
