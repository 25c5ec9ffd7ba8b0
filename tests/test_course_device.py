import pytest
import torch

from course_utils import device


def test_env_overrides_device(monkeypatch):
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert device.get_device().type == "cpu"
    assert device.get_device("cpu") == torch.device("cpu")


def test_unavailable_device_is_a_clear_error(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device.get_device("cuda")


def test_default_is_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.get_device().type == expected


def test_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv(device.THREADS_ENV, "1")
    assert device.configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(device.THREADS_ENV, "zero")
    with pytest.raises(ValueError, match="positive integer"):
        device.default_threads()
    torch.set_num_threads(before)


def test_set_seed_makes_draws_repeatable():
    device.set_seed(3)
    a = torch.rand(3)
    device.set_seed(3)
    assert torch.equal(a, torch.rand(3))
