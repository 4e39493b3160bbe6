"""Single-unit ablation, pairwise co-adaptation and sparsity via forward hooks."""
from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from regulab.analysis.coadaptation import ablation_sensitivity, coadaptation, compare_models, plot_coadaptation
from regulab.analysis.sparsity import hidden_activations, plot_first_layer_weights, plot_sparsity, sparsity_stats
from regulab.errors import RegulabError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def _data(n=128):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_additive_model_has_zero_interaction_and_exact_singles():
    net = _net()
    x, y = _data()
    loss = lambda out, y: out.sum(1).mean()  # noqa: E731 - linear in the hidden units
    single = ablation_sensitivity(net, "1", x, y, loss_fn=loss)
    h = hidden_activations(net, "1", x)  # (N, 12)
    contrib = -(h * net[2].weight.sum(0)).mean(0)  # zeroing unit i removes its share of the output
    assert torch.allclose(single.d_loss, contrib.double(), atol=1e-5)
    c = coadaptation(net, "1", x, y, pairs=30, loss_fn=loss)
    assert c.interaction.abs().max() < 1e-5


def test_multiplicative_pair_interacts():
    class Prod(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = nn.Identity()

        def forward(self, x):
            h = self.h(x)  # (N, 2)
            return (h[:, 0] * h[:, 1]).unsqueeze(1)

    x = torch.rand(50, 2) + 0.5
    loss = lambda out, y: -out.mean()  # noqa: E731
    c = coadaptation(Prod(), "h", x, torch.zeros(50), pairs=3, loss_fn=loss)
    m = float((x[:, 0] * x[:, 1]).mean())
    # singles each lose m, the pair loses m: interaction = m - 2m = -m
    assert torch.allclose(c.interaction, torch.full((3,), -m, dtype=torch.float64), atol=1e-5)


def test_state_restored_and_accuracy():
    net = _net().train()
    x, y = _data()
    r = ablation_sensitivity(net, net[1], x, y)
    assert net.training and all(m.training for m in net.modules())
    assert not net[1]._forward_hooks and 0 <= r.base_accuracy <= 1 and r.d_accuracy.shape == (12,)
    with pytest.raises(ValueError, match="coadaptation: pairs must be an integer >= 1, got 0"):
        coadaptation(net, "1", x, y, pairs=0)
    with pytest.raises(RegulabError, match="layer must be a submodule name, got 'reul'"):
        ablation_sensitivity(net, "reul", x, y)
    with pytest.raises(RegulabError, match="layer must be a submodule of the model"):
        ablation_sensitivity(net, nn.ReLU(), x, y)


def test_conv_channels_are_units():
    net = nn.Sequential(nn.Conv1d(1, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 8, 3))
    x, y = torch.randn(20, 1, 10), torch.randint(0, 3, (20,))
    assert hidden_activations(net, "1", x).shape == (20, 5)
    assert ablation_sensitivity(net, "1", x, y).d_loss.shape == (5,)


def test_sparsity_stats_known_values():
    a = torch.tensor([[0.0, 0.0, 3.0, 1.0], [0.0, 0.0, 0.0, 4.0]])
    s = sparsity_stats(a)
    assert s["fraction_zero"] == 5 / 8 and s["mean_activation"] == 1.0
    assert s["dead_units"] == 0.5 and s["fraction_strong"] == 2 / 8


def test_compare_and_plots(tmp_path):
    x, y = _data()
    a, b = _net(), _net()
    with torch.no_grad():
        b[0].bias -= 1.0  # sparser: more units below zero
    rep = compare_models({"base": (a, "1"), "sparse": (b, "1")}, x, y, pairs=20)
    assert rep["models"]["sparse"]["fraction_zero"] > rep["models"]["base"]["fraction_zero"]
    assert rep["verdict"].startswith("sparse vs base: sparsity") and "(higher)" in rep["verdict"]
    for fig in (plot_sparsity(rep["activations"]), plot_coadaptation(rep["results"]),
                plot_first_layer_weights(a), plot_first_layer_weights(torch.randn(10, 64))):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / "f.png")
        assert (tmp_path / "f.png").stat().st_size > 1000


def test_shared_module_call_index():
    from regulab.models import MLP

    torch.manual_seed(0)
    net = MLP(6, [12, 12], 3, residual=False, p=0.3)  # one dropout module after both hidden blocks
    x, y = _data()
    h1 = torch.relu(net.hidden[0](x))
    assert torch.allclose(hidden_activations(net, "dropout", x, call=0), h1)
    assert torch.allclose(hidden_activations(net, "dropout", x, call=1), torch.relu(net.hidden[1](h1)))
    r = ablation_sensitivity(net, "dropout", x, y, call=1)
    # zeroing a unit of the second layer only: equals zeroing that output of hidden.1 (ReLU(0) = 0)
    r2 = ablation_sensitivity(net, "hidden.1", x, y)
    assert torch.allclose(r.d_loss, r2.d_loss, atol=1e-6)
    with pytest.raises(RegulabError, match=r"call must be below the number of times the layer runs in one forward \(2\), got 2"):
        hidden_activations(net, "dropout", x, call=2)
