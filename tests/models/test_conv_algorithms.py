"""The discriminator's alternative convolution algorithms equal F.conv3d (values and
gradients), and FastDiscriminator equals the Discriminator it wraps."""

import copy

import pytest
import torch
import torch.nn.functional as F

from scaletrain.models.fast_discriminator import FastDiscriminator
from scaletrain.models.fft_conv import fft_conv3d, fft_size
from scaletrain.models.flat_batchnorm import batch_norm_flat
from scaletrain.models.threedgan import build_3dgan
from scaletrain.models.unfold_conv import unfold_conv3d
from scaletrain.models.zsplit_conv import zsplit_conv3d

# (in channels, out channels, padding, input size): the 3DGAN discriminator's layer shapes
SHAPES = [(1, 5, 2, 9), (4, 3, 0, 11), (3, 3, 1, 8)]


@pytest.mark.parametrize(
    "conv", [zsplit_conv3d, fft_conv3d, unfold_conv3d], ids=["zsplit", "fft", "unfold2d"]
)
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


@pytest.mark.parametrize(
    "convs",
    ["cudnn", "zsplit", "fft", "unfold2d", ("cudnn", "zsplit", "fft", "unfold2d")],
)
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


def test_unfold_conv_output_is_channels_last_from_a_channels_last_input():
    x = torch.randn(2, 3, 9, 9, 9).contiguous(memory_format=torch.channels_last_3d)
    y = unfold_conv3d(x, torch.randn(4, 3, 5, 5, 5), padding=2)
    assert y.shape == (2, 4, 9, 9, 9)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
def test_flat_batch_norm_equals_the_module_with_running_stats_and_gradients(momentum, training):
    torch.manual_seed(2)
    bn = torch.nn.BatchNorm3d(3, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    twin = copy.deepcopy(bn)
    bn.train(training), twin.train(training)
    x = (3 * torch.randn(4, 3, 5, 6, 7) + 1).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    for _ in range(2):  # twice: the running averages and the step count advance alike
        ref, got = bn(x), batch_norm_flat(twin, x)
    assert torch.allclose(got, ref, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    for name, value in bn.state_dict().items():
        assert torch.allclose(twin.state_dict()[name].float(), value.float(), atol=1e-6), name
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), (x, bn.weight, bn.bias))
    grads_got = torch.autograd.grad((got * g).sum(), (x, twin.weight, twin.bias))
    for a, r in zip(grads_got, grads_ref, strict=True):
        assert torch.allclose(a, r, atol=1e-4)
