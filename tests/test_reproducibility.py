"""A run's numbers are a function of its configuration and its recorded environment.

(The same configuration trained twice giving identical results is
tests/test_resume.py::test_same_seed_gives_identical_results.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nbutils.config import resolve
from nbutils.runs import ArtifactError, checkpoint_path, load_json, load_torch, model_dir
from nbutils.train import train_model

pytestmark = pytest.mark.slow


def _cfg(root: Path, data: Path, **params):
    return resolve("ci", run_dir=str(root), data_root=str(data), width=2, train_per_class=4,
                   test_per_class=2, batch_size=8, **params)


def test_two_checkpoint_schedules_give_identical_weights_at_a_shared_epoch(
        tmp_path: Path, fake_cache: Path) -> None:
    a = _cfg(tmp_path / "a", fake_cache, epochs=4, checkpoint_epochs=[0, 2, 4],
             train_baseline=False)
    b = _cfg(tmp_path / "b", fake_cache, epochs=4, checkpoint_epochs=[0, 1, 2, 3, 4],
             train_baseline=False, eval_every=3)
    logs = [train_model(cfg, "coarse", progress=False) for cfg in (a, b)]
    for epoch in (2, 4):
        one, two = (load_torch(checkpoint_path(cfg, "coarse", epoch))["model"] for cfg in (a, b))
        assert all(torch.equal(one[k], two[k]) for k in one), epoch
    digests = [{r["epoch"]: r["weights_sha256"] for r in log if "weights_sha256" in r}
               for log in logs]
    assert digests[0] == {e: digests[1][e] for e in (2, 4)}
    assert len(set(digests[1].values())) == 4


def test_a_resume_in_another_precision_is_refused(tmp_path: Path, fake_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import nbutils.train as train

    cfg = _cfg(tmp_path / "run", fake_cache, epochs=3, train_baseline=False)
    monkeypatch.setattr(train, "amp_dtype", lambda amp, device: None)
    first = train_model(cfg, "coarse", progress=False)
    assert len(first) == 3
    meta = load_json(model_dir(cfg, "coarse") / "train_meta.json")
    assert meta["amp"] == "off" and [s["from_epoch"] for s in meta["segments"]] == [0]
    assert meta["environment"]["cpu_instruction_set"] and meta["environment"]["threads"] >= 1
    # Cut the log back to epoch 1 as a killed run leaves it, then resume in bf16.
    state = load_torch(model_dir(cfg, "coarse") / "last.pt")
    state["epoch"], state["log"] = 1, state["log"][:1]
    torch.save(state, model_dir(cfg, "coarse") / "last.pt")
    monkeypatch.setattr(train, "amp_dtype", lambda amp, device: torch.bfloat16)
    with pytest.raises(ArtifactError, match="amp='off' but would resume with 'bfloat16'"):
        train_model(cfg, "coarse", progress=False)
    monkeypatch.setattr(train, "amp_dtype", lambda amp, device: None)
    train_model(cfg, "coarse", progress=False)
    meta = load_json(model_dir(cfg, "coarse") / "train_meta.json")
    assert [s["from_epoch"] for s in meta["segments"]] == [0, 1]
