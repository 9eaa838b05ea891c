"""Model builders that ship with graphc (the demo and the benchmarks use them; `digits_vae` is a
variational autoencoder over the same digits).

`digits_cnn` is the seed's small convolutional net (sections 5-7) for 8x8 single-channel digits,
10 classes:

    conv 3x3 (padding same) -> batch norm -> relu -> max pool 2x2
    -> residual block  z' = relu(z + conv(relu(conv(z))))        (section 6, f(z) = V g(W z))
    -> flatten -> dense -> softmax cross-entropy with integer labels

Inputs: `x` [N, 1, 8, 8] f32 and `labels` [N] i64. Outputs: `loss`, `logits` and, in training
mode, the batch-norm running statistics after this batch (`update.bn.running_mean`,
`update.bn.running_var`): by the `update.<param>` convention of `graphc.train`, a training
step feeds them back as the new values of those parameters (frozen: state, not trained by
gradient descent).
"""


from __future__ import annotations

import numpy as np

from graphc.ir.builder import Builder, Tensor
from graphc.ir.graph import Graph

IMAGE = 8
CLASSES = 10


def conv3x3(b: Builder, name: str, x: Tensor, c_in: int, c_out: int) -> Tensor:
    """3x3 convolution with bias, padding 'same' (He-initialized: it feeds a relu)."""
    w = b.param(f"{name}.w", (c_out, c_in, 3, 3), init="he")
    bias = b.param(f"{name}.b", (c_out,), init="zeros")
    return b.conv2d(x, w, bias, padding="same")


def residual_block(b: Builder, name: str, z: Tensor, channels: int) -> Tensor:
    """z' = relu(z + conv2(relu(conv1(z)))): the block perturbs z instead of replacing it."""
    with b.scope(name):
        g = conv3x3(b, f"{name}.conv1", z, channels, channels).relu()
        f = conv3x3(b, f"{name}.conv2", g, channels, channels)
        return (z + f).relu()


def digits_cnn(batch: int = 16, channels: int = 8, training: bool = True, seed: int = 0) -> Graph:
    """The CNN on a batch of `batch` images; parameters drawn from the builder's `seed`."""
    b = Builder("cnn", seed=seed)
    x = b.input("x", (batch, 1, IMAGE, IMAGE))
    labels = b.input("labels", (batch,), "i64")

    z = conv3x3(b, "conv", x, 1, channels)
    gamma = b.param("bn.gamma", (channels,), init="ones")
    beta = b.param("bn.beta", (channels,), init="zeros")
    running_mean = b.param("bn.running_mean", (channels,), init="zeros", frozen=True)
    running_var = b.param("bn.running_var", (channels,), init="ones", frozen=True)
    stats: dict[str, Tensor] = {}
    if training:
        z, new_mean, new_var = b.batch_norm(z, gamma, beta, running_mean, running_var,
                                            training=True)
        stats = {"update.bn.running_mean": new_mean, "update.bn.running_var": new_var}
    else:
        z = b.batch_norm(z, gamma, beta, running_mean, running_var, training=False)
    z = b.max_pool2d(z.relu(), kernel=2)

    z = residual_block(b, "res", z, channels)

    features = b.flatten(z)
    w = b.param("dense.w", (features.shape[1], CLASSES), init="glorot")
    bias = b.param("dense.b", (CLASSES,), init="zeros")
    logits = b.dense(features, w, bias).named("logits")
    loss = b.cross_entropy(logits, labels).named("loss")
    return b.build(outputs={"loss": loss, "logits": logits, **stats})


def digits_example_inputs(batch: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    """Random images in [0, 1) and labels in 0..9."""
    rng = np.random.default_rng(seed)
    return {"x": rng.random((batch, 1, IMAGE, IMAGE), dtype=np.float32),
            "labels": rng.integers(0, CLASSES, batch).astype(np.int64)}


def digits_vae(batch: int = 32, latent: int = 2, hidden: int = 64, seed: int = 0,
               dtype: str = "f32") -> Graph:
    """A variational autoencoder for 8x8 digits flattened to 64 pixels in [0, 1]:

        h = tanh(x W1 + b1),   mu = h Wm + bm,   log σ² = h Wv + bv
        z = mu + exp(log σ² / 2) · ε,   ε = random_normal(seed)
        logits = tanh(z D1 + c1) D2 + c2
        loss = mean over the batch of  Σ_pixels (softplus(logits) - x · logits)
                                       - ½ Σ_latent (1 + log σ² - mu² - σ²)

    The first sum is the Bernoulli reconstruction loss, the second the KL divergence from the
    standard normal prior; z is reparameterized, so gradients reach mu and σ through it.
    Inputs: `x` [batch, 64] and `seed` (an i64 scalar: a new one each step draws new noise).
    Outputs: `loss` (the negative evidence lower bound per image), `recon` (the decoded pixel
    probabilities), `mu` and `logvar`."""
    b = Builder("digits_vae", seed=seed)
    pixels = IMAGE * IMAGE
    x = b.input("x", (batch, pixels), dtype)
    noise_seed = b.input("seed", (), "i64")

    def dense(name: str, a: Tensor, n_in: int, n_out: int, act: str | None) -> Tensor:
        w = b.param(f"{name}.w", (n_in, n_out), init="glorot", dtype=dtype)
        bias = b.param(f"{name}.b", (n_out,), init="zeros", dtype=dtype)
        y = a @ w + bias
        return y.tanh() if act == "tanh" else y

    h = dense("enc", x, pixels, hidden, "tanh")
    mu = dense("mu", h, hidden, latent, None).named("mu")
    logvar = dense("logvar", h, hidden, latent, None).named("logvar")
    eps = b.random_normal(noise_seed, shape=(batch, latent), dtype=dtype)
    z = (mu + (logvar * 0.5).exp() * eps).named("z")
    logits = dense("dec2", dense("dec1", z, latent, hidden, "tanh"), hidden, pixels, None)
    recon_loss = (logits.softplus() - x * logits).sum(axes=1)
    kl = ((logvar + 1.0) - mu * mu - logvar.exp()).sum(axes=1) * -0.5
    loss = (recon_loss + kl).mean().named("loss")
    return b.build(outputs={"loss": loss, "recon": logits.sigmoid(), "mu": mu,
                            "logvar": logvar})
