"""The training loop's EMA update (issue 13): tensor lists collected once, same result bit for bit."""
import copy

import torch
from torch import nn

from physgen.training import _EmaUpdate


def _walk_every_step_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """The update as it was: collect both modules' tensors each step, one fused lerp, copy buffers."""
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - beta)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def test_ema_update_is_bit_identical_to_walking_the_modules_every_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.SiLU(), nn.Linear(16, 2))  # BatchNorm: buffers too
    ema_new, ema_old = copy.deepcopy(model), copy.deepcopy(model)
    update = _EmaUpdate(ema_new, model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for step in range(7):
        x = torch.randn(32, 3, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        beta = 0.5 ** (32 / (100.0 * (step + 1)))  # a changing beta, as under the EMA ramp-up
        update(beta)
        _walk_every_step_update(ema_old, model, beta)
    for a, b in zip(ema_new.state_dict().values(), ema_old.state_dict().values()):
        assert torch.equal(a, b)
    # and the EMA really moved away from both the initial and the current weights
    assert not torch.equal(ema_new[0].weight, model[0].weight)
    assert int(ema_new[1].num_batches_tracked) == 7


def test_ema_update_follows_in_place_loads():
    model, ema = nn.Linear(4, 4), nn.Linear(4, 4)
    update = _EmaUpdate(ema, model)
    with torch.no_grad():
        model.weight.fill_(2.0)
        ema.load_state_dict({"weight": torch.zeros(4, 4), "bias": torch.zeros(4)})  # in place: the lists stay valid
    update(0.75)
    assert torch.allclose(ema.weight, torch.full((4, 4), 0.5))
