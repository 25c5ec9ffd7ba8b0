"""Learning dynamics (chapter 02): D_i moves in jumps, and each jump is a drop in the loss."""

import pytest
import torch

from course_utils import dynamics, geometry
from course_utils.toy_models import ToyModel, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run():
    """The notebook's run: n=5, m=2, 1-S = 0.05, 16 seeds, 10k steps, a snapshot every 50."""
    torch.set_num_threads(1)
    model = ToyModel(5, 2, 16, feature_probability=0.05, device="cpu", generator=torch.Generator().manual_seed(0))
    result = train(model, steps=10_000, snapshot_every=50, progress=False, fast=True)
    D = dynamics.dimensionality_history(result)
    loss = dynamics.loss_history(model, result)
    return model, result, D, loss


def test_histories_have_one_row_per_snapshot(run):
    model, result, D, loss = run
    assert result.snapshot_steps[:3] == [0, 50, 100] and result.snapshot_steps[-1] == 10_000
    assert D.shape == (201, 16, 5) and loss.shape == (201, 16)
    assert dynamics.represented_history(result).shape == (201, 16)
    # The fixed-batch loss of the last snapshot is the model's loss on that batch.
    x = model.generate_batch(20_000, torch.Generator().manual_seed(12345))
    torch.testing.assert_close(loss[-1], model.loss(x).detach(), rtol=1e-4, atol=1e-7)


def test_geometry_jumps_coincide_with_loss_drops(run):
    _, result, D, loss = run
    found = dynamics.transitions(D, loss, result.snapshot_steps, min_jump=0.05, skip=4)
    assert len(found) >= 5
    # Every jump of some D_i by more than 0.05 within 50 steps comes with a loss drop of at
    # least 3% over the same 50 steps ...
    assert all(t.loss_change < -0.03 for t in found), [(t.instance, t.step, t.loss_change) for t in found]
    # ... while intervals where no D_i moves by more than 0.01 leave the loss nearly unchanged.
    dD = (D[1:] - D[:-1]).abs().amax(dim=-1)[4:]
    dL = ((loss[1:] - loss[:-1]) / loss[:-1])[4:]
    quiet = dL[dD < 0.01].abs()
    assert quiet.numel() > 1000 and quiet.median() < 0.002


def test_a_long_two_digon_plateau_ends_in_a_jump_to_the_pentagon(run):
    """Seed 3 of 16 sits in the two-digon configuration for ~8000 steps, then snaps to the
    pentagon: its four D_i fall from 1/2 to 2/5, the fifth rises from ~0 to 2/5, and the
    loss halves within a few hundred steps after thousands of flat ones."""
    _, result, D, loss = run
    steps = torch.tensor(result.snapshot_steps)
    i = 3
    plateau = (steps >= 2000) & (steps <= 8500)
    assert geometry.summarise_configuration(geometry.describe_configuration(result.W_history()[40])[i]) == "2 digons"
    assert geometry.summarise_configuration(geometry.describe_configuration(result.W_history()[-1])[i]) == "1 pentagon"
    flat = loss[plateau, i]
    assert (flat.max() - flat.min()) / flat.mean() < 0.02
    assert loss[-1, i] < 0.6 * flat.mean()
    on_plateau = D[plateau, i].mean(dim=0).sort().values
    torch.testing.assert_close(on_plateau[1:], torch.full((4,), 0.5), atol=0.06, rtol=0)
    assert on_plateau[0] < 0.1
    torch.testing.assert_close(D[-1, i], torch.full((5,), 0.4), atol=0.02, rtol=0)
    # The move happens in under 1000 steps: the odd feature's D_i goes from < 0.1 to > 0.35.
    odd = D[:, i].argmin(dim=-1)[100]
    rising = steps[(D[:, i, odd] > 0.1) & (steps > 8500)].min()
    risen = steps[(D[:, i, odd] > 0.35) & (steps > 8500)].min()
    assert risen - rising < 1000, (int(rising), int(risen))


def test_transitions_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        dynamics.transitions(torch.zeros(3, 2, 5), torch.zeros(3, 4), [0, 1, 2])
