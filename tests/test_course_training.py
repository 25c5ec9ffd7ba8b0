"""course_utils.training.TrainingLoop: the progress bar, NaN guard, history and snapshots that
every trainer shares."""

import subprocess
import sys
import textwrap

import pytest
import torch

from course_utils.training import SMOKE_STEPS_ENV, TrainingLoop, smoke_cap


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


# ---------------------------------------------------------------------------------------
# Smoke mode: SUPERPOSITION_SMOKE_STEPS caps every loop (the learner-notebook test uses it)


def test_smoke_mode_caps_the_steps_and_keeps_the_last_step_and_the_final_snapshot(monkeypatch):
    monkeypatch.setenv(SMOKE_STEPS_ENV, "20")
    loop = TrainingLoop(10_000, description="SAE", progress=False, log_every=8, snapshot_every=1000)
    assert (loop.steps, loop.requested_steps) == (20, 10_000)
    assert loop.description == "SAE (smoke test: 20 of 10,000 steps)"
    W = torch.zeros(1)
    ran = []
    for step in loop:
        if loop.snapshot_due(step):
            loop.snapshot(step, W=W)
        W += 1
        ran.append(step)
        if loop.logging(step):
            loop.log(step, float(step))
    if loop.snapshot_due(10_000):  # what the trainers ask after the loop: their own step count
        loop.snapshot(10_000, W=W)
    assert ran == list(range(20))
    assert loop.steps_logged == [0, 8, 16, 19] and loop.history["loss"] == [0.0, 8.0, 16.0, 19.0]
    assert loop.snapshot_steps == [0, 20] and [float(w[0]) for w in loop.snapshots["W"]] == [0.0, 20.0]
    # the default cadence follows the steps that run: every one of the 20 is logged
    assert TrainingLoop(10_000, progress=False).log_every == 1


def test_smoke_mode_leaves_shorter_loops_alone(monkeypatch):
    monkeypatch.setenv(SMOKE_STEPS_ENV, "20")
    loop = TrainingLoop(12, description="toy", progress=False)
    assert (loop.steps, loop.requested_steps, loop.description) == (12, 12, "toy")
    assert list(loop) == list(range(12))


def test_smoke_mode_shows_on_the_progress_bar(monkeypatch, capsys):
    monkeypatch.setenv(SMOKE_STEPS_ENV, "3")
    for _ in TrainingLoop(1000, description="LM", progress=True):
        pass
    assert "LM (smoke test: 3 of 1,000 steps)" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-5", "2.5", "twenty"])
def test_an_invalid_smoke_cap_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv(SMOKE_STEPS_ENV, bad)
    with pytest.raises(ValueError, match=f"{SMOKE_STEPS_ENV} must be a positive integer.*{bad!r}"):
        TrainingLoop(100, progress=False)


@pytest.mark.parametrize("value", [None, ""])
def test_without_the_smoke_variable_nothing_changes(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(SMOKE_STEPS_ENV, raising=False)
    else:
        monkeypatch.setenv(SMOKE_STEPS_ENV, value)
    loop = TrainingLoop(10_000, description="SAE", progress=False)
    assert (loop.steps, loop.requested_steps, loop.description, loop.log_every) == (10_000, 10_000, "SAE", 100)
    assert sum(1 for _ in loop) == 10_000


def test_smoke_mode_caps_the_plain_loops_too(monkeypatch):
    from course_utils import toy_models

    monkeypatch.setenv(SMOKE_STEPS_ENV, "7")
    model = toy_models.ToyModel(5, 2, n_instances=3, device="cpu", generator=torch.Generator().manual_seed(0))
    assert toy_models.train_model(model, steps=1000, progress=False).shape == (7, 3)
    assert smoke_cap(1000, "toy") == (7, "toy (smoke test: 7 of 1,000 steps)")


def test_the_checks_run_at_full_size_in_smoke_mode(monkeypatch, capsys):
    """A check compares the learner's loop (which knows nothing of smoke mode) with the
    reference's over the steps it asks; a capped reference would fail a correct loop."""
    from course_utils import checks, toy_models

    def my_train_model(model, steps, batch_size, lr, schedule, seed, progress=False):
        multiplier = toy_models.lr_schedule(schedule)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        generator = torch.Generator(device=model.W.device).manual_seed(seed)
        losses = torch.zeros(steps, model.n_instances)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * multiplier(step, steps)
            loss = model.loss(model.generate_batch(batch_size, generator))
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
            losses[step] = loss.detach()
        return losses

    monkeypatch.setenv(SMOKE_STEPS_ENV, "7")
    assert checks.check_train_model(my_train_model) is my_train_model
    assert capsys.readouterr().out.startswith("[passed] train_model")
