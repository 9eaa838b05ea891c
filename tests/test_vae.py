"""The variational autoencoder of `graphc.models.digits_vae`: noise drawn in the graph by
`random_normal` and reparameterized (z = mu + σ ε), its gradients against torch autograd fed the
same noise, finite differences through `graphc gradcheck`, and training on the 8x8 digits with a
compiled step until the held-out evidence bound improves."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir.registry import get_op
from graphc.models import digits_vae
from graphc.optim import Adam
from graphc.train import Trainer, train_step

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _noise(seed: int, shape, dtype: str = "f64") -> np.ndarray:
    return get_op("random_normal").reference(
        [np.array(seed, np.int64)],
        {"shape": shape, "stream": 0, "mean": 0.0, "std": 1.0, "dtype": dtype})


def test_vae_gradients_match_torch_fed_the_same_noise(rng):
    from .passes.test_autodiff_models import check_grads, torch_params

    g = digits_vae(batch=6, latent=3, hidden=5, dtype="f64")
    x = rng.random((6, 64))
    tp = torch_params(g)
    tx, eps = torch.tensor(x), torch.tensor(_noise(11, (6, 3)))
    h = torch.tanh(tx @ tp["enc.w"] + tp["enc.b"])
    mu, logvar = h @ tp["mu.w"] + tp["mu.b"], h @ tp["logvar.w"] + tp["logvar.b"]
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = torch.tanh(z @ tp["dec1.w"] + tp["dec1.b"]) @ tp["dec2.w"] + tp["dec2.b"]
    recon = (F.softplus(logits) - tx * logits).sum(1)
    kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)
    out = check_grads(g, "loss", {"x": x, "seed": np.array(11, np.int64)},
                      (recon + kl).mean(), tp)
    np.testing.assert_allclose(out["mu"], mu.detach().numpy(), rtol=1e-12)


def test_vae_gradient_against_finite_differences(tmp_path, capsys):
    """`graphc gradcheck` in float64: the noise is a function of the seed input, fixed while
    the parameters are perturbed."""
    from graphc.cli import main

    path = tmp_path / "vae.py"
    path.write_text("from graphc.models import digits_vae\n\n\n"
                    "def build():\n"
                    "    return digits_vae(batch=4, latent=2, hidden=6, dtype='f64')\n")
    assert main(["gradcheck", str(path), "--loss", "loss"]) == 0
    assert "parameters ok" in capsys.readouterr().out


def test_vae_trains_on_digits_with_a_compiled_step():
    from graphc.demo import load_digits_split

    xtr, _, xte, _ = load_digits_split(0)
    xtr, xte = xtr.reshape(len(xtr), 64), xte[:256].reshape(256, 64)
    model = digits_vae(batch=32)
    step = train_step(model, "loss", Adam(lr=0.01))
    exe = graphc.compile(step, target="llvm")
    trainer = Trainer(step, run=exe.as_runner())
    batches = np.random.default_rng(0).integers(0, len(xtr), (400, 32))
    # the compiled step agrees with the reference on the first update
    first = {"x": xtr[batches[0]], "step": np.array(1, np.int64)}
    want = graphc.compile(step, target="reference")(first)
    got = exe(first)
    for name in ("loss", "new.mu.w", "new.dec2.w"):
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=1e-6, err_msg=name)

    def held_out(params) -> float:
        ev = graphc.compile(digits_vae(batch=256).with_param_values(params), target="llvm")
        return float(np.mean([ev(x=xte, seed=np.array(s, np.int64))["loss"]
                              for s in range(4)]))

    before = held_out(model.param_values)
    losses = [float(trainer.step({"x": xtr[i]})["loss"]) for i in batches]
    after = held_out(trainer.model_params())
    assert np.mean(losses[-20:]) < 0.75 * np.mean(losses[:10])
    assert after < 0.75 * before, (before, after)
