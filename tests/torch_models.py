"""Random torch modules for the ONNX importer's tests: image stacks (convolutions of every
padding mode, transposed convolutions, pooling, normalization, activations, upsampling, pixel
shuffles, flips, residual connections, a classifier head) and sequence layers (RNN, GRU, LSTM,
attention, a transformer encoder layer, 1-D convolutions), exported by `torch.onnx` the way
users export them. Imported only by tests that have torch."""

from __future__ import annotations

import random

import torch
from torch import nn


class Lambda(nn.Module):
    def __init__(self, fn, name: str) -> None:
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def activation(r: random.Random) -> nn.Module:
    # Softplus keeps its default threshold: torch's exporter drops the threshold
    return r.choice([nn.ReLU(), nn.LeakyReLU(0.2), nn.ELU(0.5), nn.SELU(), nn.CELU(1.5),
                     nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.Mish(), nn.Hardswish(),
                     nn.Hardsigmoid(), nn.Softplus(2), nn.Softsign(), nn.Tanhshrink(),
                     nn.Hardtanh(-0.5, 0.7), nn.ReLU6(), nn.PReLU(), nn.Sigmoid(), nn.Tanh(),
                     nn.LogSigmoid(), nn.Hardshrink(0.3), nn.Softshrink(0.2)])


def _conv(r, c, h, w):
    k, s, p, d = r.choice([1, 2, 3]), r.choice([1, 2]), r.choice([0, 1, 2]), r.choice([1, 2])
    groups = r.choice([1, c])
    out = r.choice([c, 2 * c]) if groups == 1 else c * r.choice([1, 2])
    oh, ow = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n in (h, w))
    if oh < 1 or ow < 1:
        return None
    mode = r.choice(["zeros", "reflect", "replicate", "circular"]) if 0 < p < min(h, w) else "zeros"
    return nn.Conv2d(c, out, k, s, p, d, groups, bias=r.random() < 0.7, padding_mode=mode), \
        (out, oh, ow)


def _image_block(r, c, h, w):
    k = r.random()
    if k < 0.3:
        return _conv(r, c, h, w)
    if k < 0.4:
        ks, st, dl = r.choice([2, 3]), r.choice([1, 2]), r.choice([1, 2])
        pd = r.choice([0, 1]) if ks > 2 else 0
        op = r.choice([0, 1]) if st > 1 else 0
        oh, ow = ((n - 1) * st - 2 * pd + dl * (ks - 1) + op + 1 for n in (h, w))
        return nn.ConvTranspose2d(c, 3, ks, st, pd, op, dilation=dl), (3, oh, ow)
    if k < 0.55:
        ks, st = r.choice([2, 3]), r.choice([1, 2])
        pd = r.choice([0, 1]) if ks > 2 else 0
        if min(h, w) + 2 * pd < ks:
            return None
        m = (nn.MaxPool2d(ks, st, pd, ceil_mode=r.random() < 0.3) if r.random() < 0.5 else
             nn.AvgPool2d(ks, st, pd, ceil_mode=r.random() < 0.3,
                          count_include_pad=r.random() < 0.5))
        return m, tuple(m(torch.zeros(1, c, h, w)).shape[1:])
    if k < 0.65:
        m = r.choice([nn.BatchNorm2d(c), nn.InstanceNorm2d(c, affine=True), nn.GroupNorm(1, c),
                      nn.LayerNorm([h, w])])
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
        return m, (c, h, w)
    if k < 0.75:
        return activation(r), (c, h, w)
    if k < 0.82:
        mode = r.choice(["nearest", "bilinear"])
        return nn.Upsample(scale_factor=2, mode=mode,
                           align_corners=None if mode == "nearest" else r.random() < 0.5), \
            (c, 2 * h, 2 * w)
    if k < 0.87:
        return nn.AdaptiveAvgPool2d(1) if r.random() < 0.5 else nn.AdaptiveMaxPool2d(1), (c, 1, 1)
    if k < 0.92 and c % 4 == 0:
        return nn.PixelShuffle(2), (c // 4, 2 * h, 2 * w)
    if k < 0.96:
        return r.choice([nn.Softmax(1), nn.LogSoftmax(3)]), (c, h, w)
    return Lambda(lambda x: torch.cat([x, x.flip(1) * 0.5], 1), "cat_flip"), (2 * c, h, w)


def image_model(r: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    c, h, w = r.choice([1, 3, 4]), r.randint(4, 9), r.randint(4, 9)
    shape, layers = (c, h, w), []
    for _ in range(r.randint(1, 4)):
        got = _image_block(r, *shape)
        if got is None:
            continue
        m, out = got
        if min(out) < 1 or out[0] * out[1] * out[2] > 20000:
            break
        layers.append(Residual(m) if out == shape and r.random() < 0.3 else m)
        shape = out
    if r.random() < 0.5:
        layers += [nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 10)]
    return nn.Sequential(*layers), (r.choice([1, 2]), c, h, w)


class SequenceLayer(nn.Module):
    def __init__(self, r: random.Random, f: int) -> None:
        super().__init__()
        self.kind = r.choice(["lstm", "gru", "rnn", "mha", "enc", "conv1d"])
        self.batch_first = r.random() < 0.5
        if self.kind in ("lstm", "gru", "rnn"):
            cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[self.kind]
            extra = {"nonlinearity": r.choice(["tanh", "relu"])} if self.kind == "rnn" else {}
            self.m = cls(f, r.choice([4, 6]), num_layers=r.choice([1, 2]),
                         bidirectional=r.random() < 0.4, batch_first=self.batch_first, **extra)
        elif self.kind == "mha":
            self.m = nn.MultiheadAttention(f, 2, batch_first=self.batch_first)
        elif self.kind == "enc":
            self.m = nn.TransformerEncoderLayer(f, 2, dim_feedforward=16, dropout=0.0,
                                                batch_first=self.batch_first,
                                                norm_first=r.random() < 0.5,
                                                activation=r.choice(["relu", "gelu"]))
        else:
            self.m = nn.Conv1d(f, 4, r.choice([1, 2, 3]), r.choice([1, 2]), r.choice([0, 1]),
                               dilation=r.choice([1, 2]),
                               padding_mode=r.choice(["zeros", "reflect", "replicate"]))

    def forward(self, x):
        if self.kind in ("lstm", "gru", "rnn"):
            return self.m(x)[0]
        if self.kind == "mha":
            return self.m(x, x, x, need_weights=False)[0]
        if self.kind == "enc":
            return self.m(x)
        return self.m(x.transpose(1, 2))


def sequence_model(r: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    f, t, n = r.choice([2, 4, 6]), r.randint(2, 6), r.choice([1, 3])
    m = SequenceLayer(r, f)
    if m.kind == "conv1d":
        return m, (n, t + 4, f)
    return m, ((n, t, f) if m.batch_first else (t, n, f))


def random_torch_model(seed: int) -> tuple[nn.Module, torch.Tensor]:
    """A model in eval mode with distinct parameter values (torch's exporter merges equal
    initializers, which would merge their gradients) and an input for it."""
    r = random.Random(seed)
    torch.manual_seed(seed)
    model, shape = (image_model if seed % 2 == 0 else sequence_model)(r)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, torch.randn(*shape)
