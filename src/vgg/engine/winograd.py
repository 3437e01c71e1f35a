"""Winograd for the big 3x3 convs: the transforms as data, when a conv takes them, and the CPU runner
of one conv (the (m+2)^2 matrix products on oneDNN-packed weights)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .guards import LINEAR_OPS, has_ops

# Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# CVPR 2016): F(m x m, 3x3) makes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
# multiplications per channel pair instead of 9 m^2. Y = A^T [(G g G^T) * (B^T d B)] A; the matrices
# are Lavin & Gray's, with interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4).
WINOGRAD = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],                   # B^T
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],          # G
        [[1, 1, 1, 0], [0, 1, -1, -1]]),                                               # A^T
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
# F(4x4, 3x3): faster than F(2x2, 3x3) on VGG16's 256- and 512-channel layers (BENCHMARKS.md), with
# a relative error of ~1e-5 against the direct conv instead of ~2e-6.
WINOGRAD_TILE = 4
# In bfloat16 (the opt-in bf16 engine) F(2x2, 3x3): F(4x4)'s points +-2 amplify bf16's rounding to a
# relative error of ~3.5e-2 per layer, F(2x2) to ~6e-3, against the direct bf16 conv's ~2.4e-3
# (VGG16's convs, He-initialised; benchmarks/winograd.py, BENCHMARKS.md "bf16 Winograd").
WINOGRAD_TILE_BF16 = 2
# When a 3x3 conv runs as Winograd, measured against the direct oneDNN conv (BENCHMARKS.md): from 128
# input channels (on fewer the transforms cost more than the saved multiplications), when the call is
# big enough that the (m+2)^2 matrix products outweigh their fixed cost, and on maps of 14 px a side
# or more (tiles hanging over the edge of a 10 x 10 map waste 44% of the work, of a 5 x 5 map 156%).
WINOGRAD_MIN_CHANNELS = 128
# In bf16 from 256 input channels: the direct bf16 conv does twice as many multiply-adds a cycle as
# float32's, so the transforms weigh twice as much (batch 8, Zen 5, benchmarks/winograd.py: at 128 ->
# 128 on 112 x 112 maps F(2x2) took 58 ms, the direct bf16 conv 32 ms; 256 -> 256 on 56 x 56, 35 and
# 35 ms, and 33 and 38 ms in another run; 512 -> 512 on 28 x 28, 25 and 34 ms).
WINOGRAD_MIN_CHANNELS_BF16 = 256
WINOGRAD_MIN_MACS = 400_000_000
WINOGRAD_MIN_SIDE = 14
# Bytes of transformed input per piece of a batch (see Winograd3x3.__call__).
WINOGRAD_CHUNK_BYTES = 8 << 20


def winograd_pays(shape: tuple, weight_shape: tuple) -> bool:
    """Whether a call on input of ``shape`` (N, C, H, W) of a conv whose weight is (K, C, 3, 3) is big
    enough, on a map large enough, for Winograd to pay."""
    k, c = weight_shape[:2]
    macs = shape[0] * shape[2] * shape[3] * k * c * 9
    return macs >= WINOGRAD_MIN_MACS and min(shape[2], shape[3]) >= WINOGRAD_MIN_SIDE


def winograd_tile(dtype: torch.dtype) -> int:
    """The output tile m of F(m x m, 3x3) for a conv computing in ``dtype``."""
    return WINOGRAD_TILE_BF16 if dtype == torch.bfloat16 else WINOGRAD_TILE


def _sparse_rows(matrix: list[list[float]]) -> list[list[tuple[float, int]]]:
    """Each row's nonzero (coefficient, column) terms, a coefficient of 1 first when there is one."""
    return [sorted(((c, j) for j, c in enumerate(row) if c != 0), key=lambda t: t[0] != 1) for row in matrix]


def _combine(rows: list[list[tuple[float, int]]], parts: list[Tensor], out: list[Tensor]) -> None:
    """out[i] = sum over row i's terms of c * parts[j], one fused multiply-add pass per term, no
    temporaries; ``rows`` from :func:`_sparse_rows`."""
    for terms, o in zip(rows, out):
        (c0, j0), rest = terms[0], terms[1:]
        if c0 != 1:
            torch.mul(parts[j0], c0, out=o)
        elif rest:
            (c1, j1), rest = rest[0], rest[1:]
            torch.add(parts[j0], parts[j1], alpha=c1, out=o)
        else:
            o.copy_(parts[j0])
        for c, j in rest:
            o.add_(parts[j], alpha=c)


class Winograd3x3:
    """Inference-only CPU runner of one 3x3, stride-1, pad-1 convolution (+ optional ReLU) as Winograd
    F(m x m, 3x3), m = ``tile``: the input is cut into overlapping (m+2)^2 tiles and transformed with
    a few multiply-adds, the (m+2)^2 tile positions become as many matrix products (C -> K channels
    over all tiles, oneDNN-packed weights), and those are transformed back into m x m output tiles.
    F(4x4, 3x3) does 4x fewer multiplications than the direct convolution and matches it to a
    relative ~1e-5 (float32 rounding of the transforms).

    ``tile`` defaults to :func:`winograd_tile` of ``dtype``. ``dtype`` bfloat16: everything in bf16,
    the matrix products accumulating in float32 (oneDNN's bf16 matmul); with ``tile`` 2
    (:data:`WINOGRAD_TILE_BF16`) about twice the direct bf16 conv's
    rounding error. (Keeping the transforms' first passes in float32 cut that error by only ~8% and
    cost ~25% of the runner's time: mixed-dtype elementwise passes do not vectorise.)"""

    def __init__(self, weight: Tensor, bias: Tensor, relu: bool, rows_hint: int, tile: int | None = None,
                 dtype: torch.dtype = torch.float32):
        tile = tile or winograd_tile(dtype)
        bt, g, at = WINOGRAD[tile]
        g = torch.tensor(g, dtype=torch.float64)
        k, c = weight.shape[:2]
        n = tile + 2
        u = torch.einsum("ai,kcij,bj->abkc", g, weight.double(), g).to(dtype).reshape(n * n, k, c)
        self.weights = [torch.ops.mkldnn._reorder_linear_weight(u[i].contiguous(), max(rows_hint, 1))
                        for i in range(n * n)]
        self.bt, self.at, self.tile = _sparse_rows(bt), _sparse_rows(at), tile
        self.bias, self.relu, self.out_channels = bias.to(dtype), relu, k

    @staticmethod
    def applies(conv: nn.Conv2d, dtype: torch.dtype = torch.float32) -> bool:
        """Whether ``conv`` is a plain 3x3 conv with enough input channels for Winograd to pay when
        computing in ``dtype``."""
        channels = WINOGRAD_MIN_CHANNELS_BF16 if dtype == torch.bfloat16 else WINOGRAD_MIN_CHANNELS
        return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
                and conv.in_channels >= channels and has_ops(LINEAR_OPS))

    def __call__(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        m = self.tile
        th, tw = -(-h // m), -(-w // m)  # output tiles; the last ones may hang over the edge (zeros)
        y = x.new_empty(n, th * m, tw * m, self.out_channels)
        # A few images at a time, so that the transformed tiles stay in cache (BENCHMARKS.md).
        tile_bytes = (m + 2) ** 2 * x.shape[1] * x.element_size()
        step = max(1, WINOGRAD_CHUNK_BYTES // (tile_bytes * th * tw))
        for i in range(0, n, step):
            self._tiles(x[i:i + step], y[i:i + step])
        if (h, w) != (th * m, tw * m):
            y = y[:, :h, :w].contiguous()
        y.add_(self.bias)
        if self.relu:
            y.relu_()
        return y.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory, as the oneDNN convs give

    def _tiles(self, x: Tensor, out: Tensor) -> None:
        """The convolution of ``x`` (N, C, H, W) without bias into ``out`` (N, th*m, tw*m, K)."""
        n, c, h, w = x.shape
        m, a = self.tile, self.tile + 2
        th, tw = out.shape[1] // m, out.shape[2] // m
        # Zero-padded input, channels last: the tile transforms then work on contiguous channel rows.
        xp = x.new_empty(n, m * th + 2, m * tw + 2, c)
        xp[:, 0].zero_(), xp[:, h + 1:].zero_(), xp[:, :, 0].zero_(), xp[:, :, w + 1:].zero_()
        xp[:, 1:h + 1, 1:w + 1].copy_(x.permute(0, 2, 3, 1))
        # V = B^T d B, over rows then columns; a tile's rows/columns are strided views (tiles overlap).
        rows = xp.new_empty(a, n, th, xp.shape[2], c)
        _combine(self.bt, [xp[:, i:i + m * th:m] for i in range(a)], list(rows))
        v = xp.new_empty(a, a, n, th, tw, c)
        _combine(self.bt, [rows[:, :, :, i:i + m * tw:m] for i in range(a)], [v[:, j] for j in range(a)])
        v = v.view(a * a, n * th * tw, c)
        prods = [torch.ops.mkldnn._linear_pointwise(v[i], self.weights[i], None, "none", [], "")
                 .view(n, th, tw, self.out_channels) for i in range(a * a)]
        # Y = A^T M A: over the products' rows, then their columns, straight into the output tiles.
        half = x.new_empty(m, a, n, th, tw, self.out_channels)
        for j in range(a):
            _combine(self.at, [prods[a * i + j] for i in range(a)], [half[r, j] for r in range(m)])
        y = out.view(n, th, m, tw, m, self.out_channels)
        columns = [y[:, :, :, :, s].permute(2, 0, 1, 3, 4) for s in range(m)]  # (r, n, th, tw, K) views
        _combine(self.at, [half[:, j] for j in range(a)], columns)
