"""The ensemble trainer: each member is an ordinary denoiser trained alone, in vectorised form."""

import numpy as np
import pytest
import torch

from memdyn.diffusion import NoiseSchedule, ResidualMLP, denoising_loss, load_dataset
from memdyn.diffusion.ensemble import StackedMLP, train_ensemble
from memdyn.diffusion.models import seeded

SHAPE = (1, 7, 7)


def build():
    return ResidualMLP(SHAPE, width=32, depth=2)


def test_stacked_forward_is_each_members_forward():
    models = [seeded(build, s) for s in (3, 4, 5)]
    net = StackedMLP(models)
    x, t = torch.randn(3, 6, *SHAPE), torch.randint(0, 1000, (3, 6))
    y = net(x, t)
    for m, model in enumerate(models):
        torch.testing.assert_close(y[m], model(x[m], t[m]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.member(m)(x[m], t[m]), model(x[m], t[m]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="architecture"):
        StackedMLP([build(), ResidualMLP(SHAPE, width=16, depth=2)])


def _data(members):
    return torch.stack([load_dataset("mnist5k-7", 6, seed=s).train for s in range(members)])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_step_is_the_members_own_optimizer_step(optimizer):
    """One step of member m equals torch's SGD / Adam step of the member alone on the same batch
    (its batch of batch_sizes[m] items drawn from its own generator)."""
    data = _data(2)
    lrs, bs, seeds = [0.05, 0.01], [3, 5], [11, 12]
    res = train_ensemble(build, data, steps=1, lrs=lrs, batch_sizes=bs, weights_seeds=[1, 2], batch_seeds=seeds,
                         optimizer=optimizer, every=1, probes=2, progress=False)
    schedule = NoiseSchedule()
    for m in range(2):
        model = seeded(build, m + 1)
        g = torch.Generator().manual_seed(seeds[m])
        B = max(bs)
        idx, t = torch.randint(0, 6, (B,), generator=g), torch.randint(0, 1000, (B,), generator=g)
        eps = torch.randn((B,) + SHAPE, generator=g)
        b = bs[m]
        opt = (torch.optim.SGD(model.parameters(), lr=lrs[m]) if optimizer == "sgd"
               else torch.optim.Adam(model.parameters(), lr=lrs[m]))
        loss = denoising_loss(model, schedule, data[m][idx[:b]], t[:b], eps[:b])
        loss.backward()
        opt.step()
        assert res.losses[m, 0] == pytest.approx(loss.item(), rel=1e-5)
        # Adam's first step is lr g / (|g| + 1e-8) elementwise: where |g| ~ 1e-8 a rounding-level change of g moves
        # it by a share of lr (one element in a thousand here)
        atol = 1e-6 if optimizer == "sgd" else 1e-2 * lrs[m]
        for p, q in zip(res.model.member(m).parameters(), model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=atol)


def test_members_do_not_depend_on_the_rest_of_the_ensemble():
    data = _data(3)
    kw = dict(steps=30, optimizer="sgd", every=5, probes=4, progress=False)
    big = train_ensemble(build, data, lrs=[0.1, 0.2, 0.05], batch_sizes=[4, 8, 2], weights_seeds=[1, 2, 3],
                         batch_seeds=[7, 8, 9], **kw)
    alone = train_ensemble(build, data[1:2], lrs=0.2, batch_sizes=8, weights_seeds=[2], batch_seeds=[8], **kw)
    np.testing.assert_allclose(big.losses[1], alone.losses[0], rtol=1e-4)
    assert big.monitors[1].history()["step"].unique().tolist() == list(range(0, 31, 5))
    np.testing.assert_allclose(big.monitors[1].history()["ratio"], alone.monitors[0].history()["ratio"], rtol=1e-3,
                               atol=1e-4)


def test_an_ema_member_samples_the_bias_corrected_average_of_its_own_iterates():
    from memdyn.diffusion import ddim_sample, probe_noise
    from memdyn.monitor import MemorizationMonitor

    data = _data(1).repeat(2, 1, 1, 1, 1)
    d, K = 0.8, 4
    kw = dict(lrs=0.2, batch_sizes=4, weights_seeds=[1, 1], batch_seeds=[5, 5], every=K, start=K, probes=3,
              probe_seeds=[9, 9], sample_steps=4, progress=False)
    res = train_ensemble(build, data, steps=K, ema=[0.0, d], **kw)
    iterates = [train_ensemble(build, data[:1], steps=k, **{**kw, "weights_seeds": [1], "batch_seeds": [5],
                                                           "probe_seeds": [9]}).model.member(0) for k in range(1, K + 1)]
    w = np.array([d ** (K - j) for j in range(1, K + 1)])
    avg = build()
    with torch.no_grad():  # sum_j d^(K-j) theta_j / sum_j d^(K-j): nothing of the initial weights
        for name, p in avg.named_parameters():
            p.copy_(sum(wj * dict(m.named_parameters())[name] for wj, m in zip(w / w.sum(), iterates)))
    noise = probe_noise(3, SHAPE, 9)
    for model, member in ((iterates[-1], 0), (avg, 1)):
        mon = MemorizationMonitor(data[0], lambda model, z: z, probes=noise, every=K)
        with torch.no_grad():
            mon.record(K, ddim_sample(model, noise, NoiseSchedule(), steps=4))
        np.testing.assert_allclose(res.monitors[member].history()["ratio"], mon.history()["ratio"], rtol=1e-3,
                                   atol=1e-4)
    assert not np.allclose(res.monitors[0].history()["ratio"], res.monitors[1].history()["ratio"], rtol=1e-3)
    with pytest.raises(ValueError, match="ema"):
        train_ensemble(build, data, steps=1, ema=[0.0, 1.0], **kw)


def test_start_skips_sampling_during_burn_in_and_divergence_names_the_member():
    data = _data(2)
    res = train_ensemble(build, data, steps=12, lrs=0.05, batch_sizes=4, weights_seeds=[1, 2], batch_seeds=[3, 4],
                         every=3, start=7, probes=3, progress=False)
    assert res.monitors[0].history()["step"].unique().tolist() == [9, 12]
    with pytest.raises(FloatingPointError, match=r"member 1 \(lr=1e\+06"):
        train_ensemble(build, data, steps=50, lrs=[1e-3, 1e6], batch_sizes=4, weights_seeds=[1, 2],
                       batch_seeds=[3, 4], probes=2, progress=False)


@pytest.mark.parametrize("kwargs, needle", [({"lrs": [0.1, -1.0]}, "lrs"), ({"batch_sizes": 0}, "batch_sizes"),
                                            ({"optimizer": "rmsprop"}, "optimizer"), ({"lrs": [0.1] * 3}, "one per member"),
                                            ({"start": -1}, "start")])
def test_bad_settings_name_the_field(kwargs, needle):
    kw = dict(steps=2, lrs=0.1, batch_sizes=2, weights_seeds=[1, 2], batch_seeds=[3, 4], probes=2, progress=False)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        train_ensemble(build, _data(2), **kw)
