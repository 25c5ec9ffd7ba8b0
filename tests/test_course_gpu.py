"""The GPU path: models, the fast path's fused step and both training loops on CUDA.  Skipped without a GPU."""

import pytest
import torch

from course_utils import geometry
from course_utils.device import get_device
from course_utils._fast.toy import fused_loss_and_grads
from course_utils.toy_models import ToyModel, generate_batch, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]


def test_get_device_prefers_cuda():
    assert get_device().type == "cuda"


def test_fused_gradients_on_cuda_equal_autograd():
    model = ToyModel(7, 3, 4, feature_probability=0.3, device="cuda")
    x = generate_batch(model.feature_probability, 256, torch.Generator(device="cuda").manual_seed(0))
    model.loss(x).sum().backward()
    _, grad_W, grad_b = fused_loss_and_grads(model, x.clone(), slice(0, 4))
    torch.testing.assert_close(grad_W, model.W.grad, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(grad_b, model.b.grad, rtol=1e-3, atol=1e-6)


def test_pentagon_forms_on_cuda():
    model = ToyModel(5, 2, 8, feature_probability=0.05, device="cuda", generator=torch.Generator().manual_seed(0))
    train(model, steps=5_000, progress=False, fast=True)
    gaps = geometry.sorted_angle_gaps(model.W.detach().cpu())
    assert sum(len(g) == 5 and (g - 72).abs().max() < 5 for g in gaps) >= 4


def test_autograd_path_on_cuda():
    model = ToyModel(5, 2, 2, feature_probability=0.1, device="cuda")
    result = train(model, steps=200, progress=False)
    assert result.final_loss.shape == (2,) and torch.isfinite(result.final_loss).all()


def test_memorization_sweep_on_cuda_shows_both_regimes_and_the_bump():
    """Chapter 07's batched sweep (the size of tests/test_ch07_memorization.py's CPU sweep) on CUDA:
    the same physics as on the CPU, since every instance's data and W come from CPU generators."""
    from course_utils import memorization as mz

    Ts = [3, 5, 8, 20, 35, 60, 100, 400]
    sweep = mz.sweep_T(Ts, m=2, n_features=100, feature_probability=0.05, steps=3000, lr=1e-2,
                       device="cuda", progress=False, T_test=1000)
    k5, k400 = Ts.index(5), Ts.index(400)
    assert mz.polygon_error(mz.polygon(sweep.H[k5:k5 + 1, :5].transpose(1, 2))[0]) < 15   # data points: a 5-gon
    assert mz.polygon_error(mz.polygon(sweep.W[k400:k400 + 1])[0]) < 10                   # features: a pentagon
    assert sweep.data_D[0] > 0.6 and sweep.data_D[-1] < 0.05 and sweep.feature_D[-1] > 0.25
    peak = int(sweep.test_loss.argmax())
    assert 0 < peak < len(Ts) - 1
    assert float(sweep.test_loss[peak]) > max(float(sweep.test_loss[0]), float(sweep.test_loss[-1])) + 0.5
