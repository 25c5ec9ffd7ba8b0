"""course_utils.training.TrainingLoop: the progress bar, NaN guard, history and snapshots that
every trainer shares."""

import subprocess
import sys
import textwrap

import pytest
import torch

from course_utils.training import TrainingLoop


def test_logs_every_k_steps_and_the_last_and_gives_back_what_was_logged():
    loop = TrainingLoop(10, progress=False, log_every=4)
    for step in loop:
        if loop.logging(step):
            loop.log(step, torch.tensor([float(step), 2.0 * step]), l0=float(step), W=torch.full((2, 2), step))
    assert loop.steps_logged == [0, 4, 8, 9]
    assert [t.tolist() for t in loop.history["loss"]] == [[0.0, 0.0], [4.0, 8.0], [8.0, 16.0], [9.0, 18.0]]
    assert loop.history["loss"][0].dtype == torch.float32
    assert loop.history["l0"] == [0.0, 4.0, 8.0, 9.0]
    assert loop.history["W"][-1].shape == (2, 2) and int(loop.history["W"][-1][0, 0]) == 9
    assert loop.seconds > 0


def test_default_cadence_is_a_hundred_records():
    loop = TrainingLoop(1000, progress=False)
    assert loop.log_every == 10
    assert TrainingLoop(50, progress=False).log_every == 1


def test_a_nan_loss_names_the_step_and_the_instances():
    loop = TrainingLoop(5, progress=False, what="the SAE loss", advice="lower the learning rate")
    with pytest.raises(FloatingPointError, match=r"the SAE loss became NaN or infinite at step 2 \(instances \[1\]\)"):
        for step in loop:
            loss = torch.tensor([1.0, float("nan") if step == 2 else 1.0])
            loop.log(step, loss, mse=0.5)


def test_snapshots_before_each_k_steps_and_after_the_last():
    loop = TrainingLoop(10, progress=False, snapshot_every=4)
    W = torch.zeros(2)
    for step in loop:
        if loop.snapshot_due(step):
            loop.snapshot(step, W=W)
        W += 1
    loop.snapshot(10, W=W)
    assert loop.snapshot_steps == [0, 4, 8, 10]
    assert [float(w[0]) for w in loop.snapshots["W"]] == [0.0, 4.0, 8.0, 10.0]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainingLoop(bad)


def test_a_thousand_logged_steps_do_not_grow_memory():
    """Chapter 02's reference loop logs every one of its 1,000 steps.  Kept as a thousand small
    tensors between each step's large temporaries, the history fragmented the C heap to a
    2.3 GB peak (the learner notebook then broke Binder's 2 GB); kept as numbers, 0.34 GB."""
    code = textwrap.dedent("""
        import resource, torch
        torch.set_num_threads(1)
        from course_utils import scaling
        p = scaling.power_law_probability(512, 0.25)
        W, b = scaling.init_parameters(512, 16, 2, generator=torch.Generator().manual_seed(0))
        W.requires_grad_(), b.requires_grad_()
        losses = scaling.train_scaling_model(W, b, p, torch.tensor([-1.0, 0.1]), steps=1000, progress=False)
        assert losses.shape == (1000, 2)
        # this process's own peak: VmHWM of its address space.  ru_maxrss would not do: Linux
        # carries it over exec from the parent, here a pytest worker that may hold a gigabyte.
        try:
            status = open("/proc/self/status").read()
            print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
        except (OSError, IndexError):  # no /proc (macOS): ru_maxrss, in bytes there
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 2**20)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.split()[-1])
    assert peak_mb < 900, f"peak {peak_mb} MB"
