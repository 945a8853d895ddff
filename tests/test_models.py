"""The CIFAR ResNet-18: shapes, parameter count, features feeding the head."""

from __future__ import annotations

import pytest
import torch

from nbutils.models import Projection, ResNet18, count_parameters


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



@pytest.mark.parametrize("c_in", [2, 4, 8, 16])
def test_strided_shortcut_gradient_in_channels_last_matches_float64(c_in: int) -> None:
    # Below 8 input channels oneDNN's AVX2 kernel corrupts this gradient (or never returns).
    torch.manual_seed(0)
    conv = Projection(c_in, 2 * c_in, 1, 2, bias=False).to(memory_format=torch.channels_last)
    x, grad_out = torch.randn(128, c_in, 32, 32), torch.randn(128, 2 * c_in, 16, 16)
    weight = conv.weight.detach().double().requires_grad_()
    torch.nn.functional.conv2d(x.double(), weight, stride=2).backward(grad_out.double())
    # The fault is a race between threads: one pass can come out right by chance.
    for _ in range(10):
        conv.weight.grad = None
        conv(x.contiguous(memory_format=torch.channels_last)).backward(grad_out)
        assert torch.allclose(conv.weight.grad.double(), weight.grad, rtol=1e-4, atol=1e-4)


def test_every_strided_shortcut_is_a_projection() -> None:
    convs = [m for m in ResNet18(5, width=2).modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(convs) == 3 and all(isinstance(m, Projection) for m in convs)
