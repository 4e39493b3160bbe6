"""torch.compile / torch.export integration (slower: each compile takes seconds)."""
import pytest
import torch
from torch import nn

import regulab


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), regulab.nn.Dropout(0.5), nn.Linear(32, 4))


@pytest.mark.slow
def test_compile_fullgraph_inductor_trains_and_matches_eager_in_eval():
    model = _model()
    compiled = torch.compile(model, fullgraph=True)  # default backend (Inductor)
    x = torch.randn(8, 16)
    y1, y2 = compiled(x), compiled(x)
    assert not torch.equal(y1, y2)  # dropout is active in training
    y1.sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    drop = model[2]
    h = torch.randn(64, 32)
    out = torch.compile(drop, fullgraph=True)(h)
    assert ((out == 0) | torch.isclose(out, h * 2)).all() and (out == 0).any()
    model.eval()
    assert torch.allclose(compiled(x), model(x))


def test_export_of_eval_model_has_no_dropout_node():
    model = _model().eval()
    ep = torch.export.export(model, (torch.randn(2, 16),))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert not any("dropout" in t or "masked_scale" in t for t in targets), targets


def test_custom_op_passes_opcheck():
    x = torch.randn(64, 8, requires_grad=True)
    torch.library.opcheck(torch.ops.regulab.masked_scale.default, (x, torch.tensor(5), 0.5, None))
