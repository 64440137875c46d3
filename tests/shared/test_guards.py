import pytest
import torch

from shared.guards import FAULT_NAN_STEP_ENV, NonFiniteLossError, check_finite_loss, inject_nan


def test_finite_loss_passes_and_returns_its_value():
    assert check_finite_loss(torch.tensor(0.25), step=3) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_names_the_step(bad):
    with pytest.raises(NonFiniteLossError, match=r"at step 7 \(epoch 1\)"):
        check_finite_loss(torch.tensor(bad), step=7, where="epoch 1")


def test_nan_is_injected_only_at_the_planted_step(monkeypatch):
    loss = torch.tensor(1.0, requires_grad=True)
    assert inject_nan(loss, 5) is loss  # unset: inert
    monkeypatch.setenv(FAULT_NAN_STEP_ENV, "5")
    assert torch.isfinite(inject_nan(loss, 4))
    assert torch.isnan(inject_nan(loss, 5))
