"""The discriminator's alternative convolution algorithms equal F.conv3d (values and
gradients), and FastDiscriminator equals the Discriminator it wraps."""

import pytest
import torch
import torch.nn.functional as F

from scaletrain.models.fast_discriminator import FastDiscriminator
from scaletrain.models.fft_conv import fft_conv3d, fft_size
from scaletrain.models.threedgan import build_3dgan
from scaletrain.models.zsplit_conv import zsplit_conv3d

# (in channels, out channels, padding, input size): the 3DGAN discriminator's layer shapes
SHAPES = [(1, 5, 2, 9), (4, 3, 0, 11), (3, 3, 1, 8)]


@pytest.mark.parametrize("conv", [zsplit_conv3d, fft_conv3d], ids=["zsplit", "fft"])
@pytest.mark.parametrize("cin,cout,pad,size", SHAPES)
def test_conv_equals_conv3d_with_gradients(conv, cin, cout, pad, size):
    torch.manual_seed(0)
    x = torch.randn(2, cin, size, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, requires_grad=True)
    ref = F.conv3d(x, w, b, padding=pad)
    got = conv(x, w, b, padding=pad)
    assert got.shape == ref.shape
    # the FFT runs in float32 whatever the input: compare at its precision
    tol = 1e-5 if conv is fft_conv3d else 1e-10
    assert (got.double() - ref).abs().max() <= tol * ref.abs().max()
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), (x, w, b))
    grads_got = torch.autograd.grad((got.double() * g).sum(), (x, w, b))
    for a, r in zip(grads_got, grads_ref, strict=True):
        assert (a - r).abs().max() <= tol * r.abs().max()


def test_fft_sizes_have_small_prime_factors_and_never_shrink():
    assert [fft_size(n) for n in (25, 27, 29, 31, 33)] == [25, 27, 30, 32, 35]


@pytest.mark.parametrize("convs", ["cudnn", "zsplit", "fft", ("cudnn", "zsplit", "fft", "fft")])
def test_fast_discriminator_equals_the_discriminator(convs):
    torch.manual_seed(1)
    d = build_3dgan(8, (4, 3, 3), (4, 2, 2, 2))["discriminator"].eval()
    x = torch.rand(3, 1, 25, 25, 25)
    ref = d(x)
    got = FastDiscriminator(d, convs, channels_last=False)(x)
    for a, r in zip(got, ref, strict=True):
        assert (a - r).abs().max() <= 1e-4 * r.abs().max() + 1e-7


def test_fast_discriminator_refuses_an_unknown_algorithm():
    d = build_3dgan(8, (4, 3, 3), (4, 2, 2, 2))["discriminator"]
    with pytest.raises(ValueError, match="convs must name"):
        FastDiscriminator(d, ("cudnn", "winograd", "fft", "fft"))
    with pytest.raises(ValueError, match="convs must name"):
        FastDiscriminator(d, ("cudnn", "fft"))
