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
