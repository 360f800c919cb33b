"""The 3DGAN generator re-expressed exactly, with about a quarter of the arithmetic.

Three rewrites, each exact in real arithmetic (tests/bench checks them to fp32 rounding):

1. dense -> reshape -> zero pad -> conv1 is one affine map of the latent vector: a single
   (latent x 64*7*7*8) matrix product replaces a 116 MFLOP convolution by a 10 MFLOP GEMM,
   with its columns ordered channels-last so that no layout copy follows.
2. Nearest upsampling by f, zero padding, then a convolution with kernel K is a convolution
   on the *low-resolution* grid with f "phase" kernels of about (K + f - 1) / f taps per
   dimension, whose taps are sums of the original taps (sub-pixel convolution); a pixel
   shuffle interleaves the phases. conv2 (64 -> 6, 6x5x8, the layer that dominated at
   41 TFLOP/s) drops from 302 to 90 MFLOP per shower, conv3 from 91 to 32.
3. The last 2x2x2 convolution runs on conv3's phase-form output directly (its weights
   re-indexed by phase), so the large 6-channel full-resolution map is never shuffled;
   only the final one-channel image is.

`FastGenerator(g)` computes the derived weights from `g`'s parameters on every call, so it
trains like `g` (gradients reach g's parameters through the weight maps, batch norm uses
g's modules and statistics); `FastGenerator(g, frozen=True)` computes them once, in float64,
folds the batch norms (eval statistics) and stores everything in one dtype: the inference
path that `scaletrain.fastpath` compiles and captures in a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.models.flat_batchnorm import batch_norm_flat
from scaletrain.models.threedgan import Generator


@dataclass(frozen=True)
class _Dim:
    """One spatial dimension of `upsample(f) -> pad(lo, hi) -> conv(K)` on a grid of n cells."""

    n: int
    f: int
    pad_lo: int
    pad_hi: int
    k: int

    @property
    def n_out(self) -> int:  # output length of the original layer
        return self.f * self.n + self.pad_lo + self.pad_hi - self.k + 1

    @property
    def lo(self) -> int:  # zero cells added on the low-res grid, on the left
        return -(-self.pad_lo // self.f)

    @property
    def shift(self) -> int:  # offset of the up-sampled grid against the low-res padding
        return self.f * self.lo - self.pad_lo

    @property
    def taps(self) -> int:
        return (self.f - 1 + self.k - 1 + self.shift) // self.f + 1

    @property
    def m(self) -> int:  # phase-grid length: outputs per phase
        return -(-self.n_out // self.f)

    @property
    def hi(self) -> int:  # zero cells added on the right so that every phase output exists
        return max(0, self.m - 1 + self.taps - self.n - self.lo)

    def subpixel(self) -> torch.Tensor:
        """(f, taps, k) 0/1 map: phase r's tap j sums the original taps k that land on it."""
        a = torch.zeros(self.f, self.taps, self.k, dtype=torch.float64)
        for r in range(self.f):
            for kk in range(self.k):
                a[r, (r + kk + self.shift) // self.f, kk] = 1.0
        return a


def _phase_conv_map(f: int, k: int) -> torch.Tensor:
    """(f_out, f_in, taps, k) 0/1 map of a plain conv (kernel k) acting on phase-form input."""
    taps = (f - 1 + k - 1) // f + 1
    b = torch.zeros(f, f, taps, k, dtype=torch.float64)
    for r in range(f):
        for kk in range(k):
            b[r, (r + kk) % f, (r + kk) // f, kk] = 1.0
    return b


def _subpixel_weight(w: torch.Tensor, dims: tuple[_Dim, _Dim, _Dim]) -> torch.Tensor:
    """(O, C, KD, KH, KW) -> (O * fD * fH * fW, C, TD, TH, TW), phase-major per channel."""
    a, b, c = (d.subpixel().to(w) for d in dims)
    wp = torch.einsum("ocxyz,pix,qjy,rkz->opqrcijk", w, a, b, c)
    *_, ch, ti, tj, tk = wp.shape
    return wp.reshape(-1, ch, ti, tj, tk)


def _phase_weight(w: torch.Tensor, f: tuple[int, int, int]) -> torch.Tensor:
    """(O, C, KD, KH, KW) plain conv -> conv from (C, phases) to (O, phases) channels."""
    a, b, c = (_phase_conv_map(fi, k).to(w) for fi, k in zip(f, w.shape[2:], strict=True))
    wp = torch.einsum("ocxyz,aeix,bgjy,dhkz->oabdcegh" + "ijk", w, a, b, c)
    o, fa, fb, fd, ch, fe, fg, fh, ti, tj, tk = wp.shape
    return wp.reshape(o * fa * fb * fd, ch * fe * fg * fh, ti, tj, tk)


def _shuffle(x: torch.Tensor, f: tuple[int, int, int], n: tuple[int, int, int]) -> torch.Tensor:
    """Phase form (B, O*fD*fH*fW, MD, MH, MW) -> full grid (B, O, n...) (cropped)."""
    bsz, _, md, mh, mw = x.shape
    fd, fh, fw = f
    x = x.view(bsz, -1, fd, fh, fw, md, mh, mw).permute(0, 1, 5, 2, 6, 3, 7, 4)
    x = x.reshape(bsz, -1, md * fd, mh * fh, mw * fw)
    return x[:, :, : n[0], : n[1], : n[2]]


def _pad3(x: torch.Tensor, lo: tuple[int, ...], hi: tuple[int, ...]) -> torch.Tensor:
    if not any(lo) and not any(hi):
        return x
    return F.pad(x, (lo[2], hi[2], lo[1], hi[1], lo[0], hi[0]))


class _Geometry:
    """Shapes of the generator's three convolution stages, read off its modules."""

    def __init__(self, g: Generator) -> None:
        body = list(getattr(g, "body", ()))
        kinds = [type(m) for m in body]
        expected = [
            nn.ConstantPad3d, nn.Conv3d, nn.LeakyReLU, nn.BatchNorm3d,
            nn.Upsample, nn.ConstantPad3d, nn.Conv3d, nn.LeakyReLU, nn.BatchNorm3d,
            nn.Upsample, nn.ConstantPad3d, nn.Conv3d, nn.LeakyReLU, nn.Conv3d, nn.ReLU,
        ]  # fmt: skip
        if kinds != expected:
            raise ValueError("FastGenerator needs the 3DGAN generator's layer sequence")
        self.pad1, self.conv1, _, self.bn1 = body[0:4]
        self.conv2, self.bn2 = body[6], body[8]
        self.conv3, self.conv4 = body[11], body[13]
        self.slope = body[2].negative_slope
        self.grid0 = (7, 7, 8)  # the dense layer's output grid
        self.c0 = g.base_channels
        self.stage2 = self._dims(self.grid0, body[4], body[5], self.conv2)
        grid2 = tuple(d.n_out for d in self.stage2)
        self.stage3 = self._dims(grid2, body[9], body[10], self.conv3)
        self.grid3 = tuple(d.n_out for d in self.stage3)
        self.f3 = tuple(d.f for d in self.stage3)
        self.m3 = tuple(d.m for d in self.stage3)
        k4 = self.conv4.kernel_size
        self.out = tuple(n - k + 1 for n, k in zip(self.grid3, k4, strict=True))
        self.m4 = tuple(-(-n // f) for n, f in zip(self.out, self.f3, strict=True))
        taps4 = tuple((f - 1 + k - 1) // f + 1 for f, k in zip(self.f3, k4, strict=True))
        self.hi4 = tuple(
            max(0, m4 - 1 + t - m3) for m4, t, m3 in zip(self.m4, taps4, self.m3, strict=True)
        )

    @staticmethod
    def _dims(grid, up: nn.Upsample, pad: nn.ConstantPad3d, conv: nn.Conv3d):
        f = up.scale_factor
        f = tuple(int(v) for v in (f if isinstance(f, tuple) else (f, f, f)))
        if up.mode != "nearest" or any(conv.padding) or conv.stride != (1, 1, 1):
            raise ValueError("FastGenerator expects nearest upsampling and unpadded convs")
        p = pad.padding  # (W_lo, W_hi, H_lo, H_hi, D_lo, D_hi)
        lo, hi = (p[4], p[2], p[0]), (p[5], p[3], p[1])
        return tuple(
            _Dim(n, fi, a, b, k)
            for n, fi, a, b, k in zip(grid, f, lo, hi, conv.kernel_size, strict=True)
        )


def _pad_out(w: torch.Tensor, b: torch.Tensor | None, multiple: int):
    """Zero output channels up to a multiple (tensor cores want multiples of 8)."""
    extra = -w.shape[0] % multiple
    if extra:
        w = torch.cat([w, w.new_zeros(extra, *w.shape[1:])])
        b = None if b is None else torch.cat([b, b.new_zeros(extra)])
    return w, b


def _pad_in(w: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = -w.shape[1] % multiple
    if extra:
        w = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1)
    return w


class FastGenerator(nn.Module):
    """Latent (B, latent) -> showers (B, 1, 25, 25, 25), equal to `generator(latent)`."""

    def __init__(
        self,
        generator: Generator,
        *,
        frozen: bool = False,
        dtype: torch.dtype | None = None,
        out_dtype: torch.dtype | None = None,
        channel_multiple: int = 8,
    ) -> None:
        super().__init__()
        self.geo = _Geometry(generator)
        self.frozen = frozen
        self.out_dtype = out_dtype
        self.channel_multiple = channel_multiple
        if frozen:
            self.generator = None
            with torch.no_grad():
                derived = self._derive(generator, torch.float64, folded=True)
            ref = next(generator.parameters())
            for name, t in derived.items():
                self.register_buffer(name, t.to(device=ref.device, dtype=dtype or ref.dtype))
        else:
            self.generator = generator  # a submodule: its parameters train through this path

    # ------------------------------------------------------------------ derived weights

    def _derive(self, g: Generator, dtype: torch.dtype, folded: bool) -> dict[str, torch.Tensor]:
        geo = self.geo
        if folded:
            p = {name: t.to(dtype) for name, t in g.state_dict().items()}
        else:  # keep the autograd graph back to the parameters
            p = dict(g.named_parameters())
        pad1 = geo.pad1.padding
        # 1. dense -> pad -> conv1, composed: push the identity and the bias through
        dense_w = p["dense.weight"].t().reshape(-1, geo.c0, *geo.grid0)
        w1 = F.conv3d(F.pad(dense_w, pad1), p["body.1.weight"])
        b1 = F.conv3d(F.pad(p["dense.bias"].reshape(1, geo.c0, *geo.grid0), pad1),
                      p["body.1.weight"], p["body.1.bias"])  # fmt: skip
        # channels-last column order: the GEMM's output is already the layout conv2 reads
        w1 = w1.permute(0, 2, 3, 4, 1).reshape(w1.shape[0], -1)
        b1 = b1.permute(0, 2, 3, 4, 1).reshape(-1)
        # 2. conv2 on the low-res grid
        w2 = _subpixel_weight(p["body.6.weight"], geo.stage2)
        b2 = p["body.6.bias"].repeat_interleave(w2.shape[0] // p["body.6.bias"].shape[0])
        # 3. conv3 likewise; its output stays in phase form for conv4
        w3 = _subpixel_weight(p["body.11.weight"], geo.stage3)
        b3 = p["body.11.bias"].repeat_interleave(w3.shape[0] // p["body.11.bias"].shape[0])
        w4 = _phase_weight(p["body.13.weight"], geo.f3)
        out = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3, "w4": w4}
        if folded:
            for i, key in (("1", "body.3"), ("2", "body.8")):
                var, mean = p[f"{key}.running_var"], p[f"{key}.running_mean"]
                eps = (geo.bn1 if i == "1" else geo.bn2).eps
                scale = p[f"{key}.weight"] / torch.sqrt(var + eps)
                out[f"bn{i}_scale"] = scale
                out[f"bn{i}_shift"] = p[f"{key}.bias"] - mean * scale
            m = self.channel_multiple
            out["w2"], out["b2"] = _pad_out(out["w2"], out["b2"], m)
            out["w3"], out["b3"] = _pad_out(_pad_in(out["w3"], m), out["b3"], m)
            out["w4"], _ = _pad_out(_pad_in(out["w4"], m), None, m)
        return out

    # ------------------------------------------------------------------ forward

    def _bn(self, x: torch.Tensor, w: dict, i: str) -> torch.Tensor:
        if self.frozen:
            shape = (1, -1, 1, 1, 1)
            return x * w[f"bn{i}_scale"].view(shape) + w[f"bn{i}_shift"].view(shape)
        return batch_norm_flat(self.geo.bn1 if i == "1" else self.geo.bn2, x)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        geo = self.geo
        if self.frozen:
            w = dict(self.named_buffers())
            latent = latent.to(w["w1"].dtype)
        else:
            w = self._derive(self.generator, latent.dtype, folded=False)
        slope = geo.slope
        bsz = latent.shape[0]
        c1 = geo.conv1.out_channels
        c2 = geo.conv2.out_channels
        x = torch.addmm(w["b1"], latent, w["w1"])
        x = x.view(bsz, *geo.grid0, c1).permute(0, 4, 1, 2, 3)  # channels-last 3-D
        x = self._bn(F.leaky_relu(x, slope), w, "1")

        s2 = geo.stage2
        x = _pad3(x, tuple(d.lo for d in s2), tuple(d.hi for d in s2))
        x = F.conv3d(x, w["w2"], w["b2"])[:, :, : s2[0].m, : s2[1].m, : s2[2].m]
        if x.shape[1] != c2 * _prod(d.f for d in s2):
            x = x[:, : c2 * _prod(d.f for d in s2)]
        x = _shuffle(x, tuple(d.f for d in s2), tuple(d.n_out for d in s2))
        x = self._bn(F.leaky_relu(x, slope), w, "2")

        s3 = geo.stage3
        if w["w3"].shape[1] > x.shape[1]:  # zero channels to the padded input width
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, w["w3"].shape[1] - x.shape[1]))
        x = _pad3(x, tuple(d.lo for d in s3), tuple(d.hi for d in s3))
        x = F.conv3d(x, w["w3"], w["b3"])[:, :, : s3[0].m, : s3[1].m, : s3[2].m]
        x = F.leaky_relu(x, slope)  # zero padded channels stay zero: conv4 ignores them

        x = _pad3(x, (0, 0, 0), geo.hi4)
        x = F.conv3d(x, w["w4"])[:, :, : geo.m4[0], : geo.m4[1], : geo.m4[2]]
        x = x[:, : geo.conv4.out_channels * _prod(geo.f3)]
        x = torch.relu(_shuffle(x, geo.f3, geo.out))
        return x if self.out_dtype is None else x.to(self.out_dtype)


def supports(generator: nn.Module) -> bool:
    """Whether `generator` has the 3DGAN layer sequence that FastGenerator re-expresses."""
    try:
        _Geometry(generator)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out
