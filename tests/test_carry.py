"""Carrying a run across machines: the deadline stop, checksummed parts, exact continuation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from nbutils import carry, runs, stages
from nbutils import train as train_mod
from nbutils.__main__ import main
from nbutils.config import resolve
from nbutils.train import check_deadline, deadline_from_env, next_epoch_estimate, train_model


def tiny_cfg(run_dir: Path, data_root: Path, **params):
    """A config that trains in about a second on the fake cache (3 steps per epoch)."""
    base = dict(run_dir=str(run_dir), data_root=str(data_root), width=2, epochs=4,
                train_per_class=4, test_per_class=2, batch_size=16, checkpoint_epochs=[0, 2, 4],
                train_baseline=False, amp="off", device="cpu")
    return resolve("ci", **{**base, **params})


def fake_run(root: Path, last_bytes: int = 50_000) -> Path:
    """A run directory with a config, and a coarse model's last.pt (random bytes) and logs."""
    runs.create_run(resolve("ci", run_dir=str(root)))
    (root / "coarse").mkdir()
    (root / "coarse" / "last.pt").write_bytes(torch.randint(0, 256, (last_bytes,),
                                                            dtype=torch.uint8).numpy().tobytes())
    runs.save_json(root / "coarse" / "log.json", [{"epoch": 1, "seconds": 0.5}])
    runs.save_json(root / "coarse" / "train_meta.json", {"device": "cpu"})
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def without_seconds(log: list[dict]) -> list[dict]:
    """A training log with its timings left out."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in log]


# --------------------------------------------------------------------------- the deadline


def test_deadline_is_checked_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_deadline(None) is None and check_deadline(1.8e9) == 1.8e9
    for bad in (0, -5.0, float("nan"), float("inf"), "soon", True):
        with pytest.raises(ValueError, match="^deadline: must be a time in Unix seconds"):
            check_deadline(bad)
    monkeypatch.setenv("NBUTILS_DEADLINE", "in ten minutes")
    with pytest.raises(ValueError, match="^NBUTILS_DEADLINE: .* got 'in ten minutes'"):
        deadline_from_env()
    monkeypatch.setenv("NBUTILS_DEADLINE", " 1800000000.5 ")
    assert deadline_from_env() == 1800000000.5
    monkeypatch.setenv("NBUTILS_DEADLINE", "")
    assert deadline_from_env() is None
    with pytest.raises(ValueError, match="^deadline: "):
        train_model(resolve("ci", run_dir="unused"), "coarse", deadline="soon")


def test_next_epoch_estimate_leaves_out_the_first_epoch_of_a_process() -> None:
    # A compiled first epoch (44 s) says nothing about the later ones (1.5 s).
    assert next_epoch_estimate([44.0, 1.5, 1.4, 1.6, 1.3], []) == 1.6
    assert next_epoch_estimate([44.0, 1.5], []) == 1.5
    assert next_epoch_estimate([44.0], []) == 44.0
    # Before any epoch here: the logged ones of a resumed run, else nothing to wait for.
    assert next_epoch_estimate([], [{"seconds": 4.0}, {"seconds": 4.5}, {"seconds": 3.9}]) == 4.5
    assert next_epoch_estimate([], []) == 0.0


@pytest.mark.slow
def test_a_passed_deadline_in_the_environment_stops_before_the_first_epoch(
        tmp_path: Path, fake_cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("NBUTILS_DEADLINE", "1000000")  # 1970
    cfg = tiny_cfg(tmp_path / "run", fake_cache)
    assert train_model(cfg, "coarse", progress=False) == []
    assert not (tmp_path / "run" / "coarse" / "last.pt").exists()
    assert "coarse: stopped after epoch 0 of 4" in capsys.readouterr().err


# --------------------------------------------------------------------------- parts and checksums


def test_pack_and_unpack_round_trip_in_parts_under_the_limit(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    manifest = carry.pack(run, tmp_path / "parts", part_bytes=16_384)
    parts = sorted((tmp_path / "parts").glob("carry.part*"))
    assert len(parts) == len(manifest["parts"]) >= 4
    assert all(p.stat().st_size <= 16_384 for p in parts)
    assert [f["path"] for f in manifest["files"]] == [
        "config.json", "coarse/last.pt", "coarse/log.json", "coarse/train_meta.json"]
    assert manifest["epochs_done"] == {"coarse": 1}
    carry.unpack(tmp_path / "parts", tmp_path / "copy")
    assert tree(tmp_path / "copy") == tree(run)


def test_a_corrupt_part_is_refused_naming_it_before_anything_is_written(tmp_path: Path) -> None:
    carry.pack(fake_run(tmp_path / "run"), tmp_path / "parts", part_bytes=16_384)
    bad = tmp_path / "parts" / "carry.part002"
    data = bytearray(bad.read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(runs.ArtifactError, match=f"part {bad} fails its sha256 check"):
        carry.unpack(tmp_path / "parts", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_a_missing_or_truncated_part_is_refused(tmp_path: Path) -> None:
    carry.pack(fake_run(tmp_path / "run"), tmp_path / "parts", part_bytes=16_384)
    last = sorted((tmp_path / "parts").glob("carry.part*"))[-1]
    last.write_bytes(last.read_bytes()[:-1])
    with pytest.raises(runs.ArtifactError, match=f"part {last} has .* bytes, the manifest says"):
        carry.unpack(tmp_path / "parts", tmp_path / "copy")
    last.unlink()
    with pytest.raises(runs.ArtifactError, match=f"part {last} is missing"):
        carry.unpack(tmp_path / "parts", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_a_member_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    carry.pack(fake_run(tmp_path / "run"), tmp_path / "parts")
    path = carry.manifest_path(tmp_path / "parts", "carry")
    manifest = json.loads(path.read_text())
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "coarse/log.json"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(runs.ArtifactError, match="'coarse/log.json', which its manifest does not"):
        carry.unpack(tmp_path / "parts", tmp_path / "copy")


def test_bad_input_is_refused_before_packing(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"^part_bytes: must be an integer in 1\.\.16777216"):
        carry.pack(run, tmp_path / "parts", part_bytes=16 * 2**20 + 1)
    with pytest.raises(ValueError, match="^name: must be letters"):
        carry.pack(run, tmp_path / "parts", name="a/b")
    with pytest.raises(ValueError, match="^run_dir: .* has no config.json"):
        carry.pack(tmp_path, tmp_path / "parts")
    with pytest.raises(ValueError, match="^models: baseline has no last.pt"):
        carry.pack(run, tmp_path / "parts", models=("baseline",))
    carry.pack(run, tmp_path / "parts")
    with pytest.raises(ValueError, match="^out_dir: .* already holds a pack named 'carry'"):
        carry.pack(run, tmp_path / "parts")


def test_unpack_refuses_another_config_or_a_further_trained_run(tmp_path: Path) -> None:
    carry.pack(fake_run(tmp_path / "run"), tmp_path / "parts")
    runs.create_run(resolve("ci", run_dir=str(tmp_path / "other"), width=4))
    with pytest.raises(ValueError, match="(?s)different configuration.*width: 4 -> 8"):
        carry.unpack(tmp_path / "parts", tmp_path / "other")
    ahead = fake_run(tmp_path / "ahead")
    runs.save_json(ahead / "coarse" / "log.json", [{"epoch": 1}, {"epoch": 2}])
    with pytest.raises(ValueError, match="coarse is at epoch 2, the pack at 1"):
        carry.unpack(tmp_path / "parts", ahead)


def test_the_cli_packs_and_unpacks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = fake_run(tmp_path / "run", last_bytes=3 * 2**20)
    assert main(["pack", str(run), str(tmp_path / "parts"), "--part-mib", "1"]) == 0
    assert "carry: coarse at epoch 1; 4 part(s)" in capsys.readouterr().out
    assert main(["unpack", str(tmp_path / "parts"), str(tmp_path / "copy")]) == 0
    assert tree(tmp_path / "copy") == tree(run)
    assert main(["pack", str(run), str(tmp_path / "p2"), "--part-mib", "17"]) == 2
    assert "--part-mib: must be in (0, 16]" in capsys.readouterr().err
    assert main(["unpack", str(tmp_path / "nothing"), str(tmp_path / "c2")]) == 2
    assert "carry.manifest.json does not exist" in capsys.readouterr().err


def test_copy_parts_moves_a_chosen_share_of_the_parts(tmp_path: Path) -> None:
    manifest = carry.pack(fake_run(tmp_path / "run"), tmp_path / "parts", part_bytes=16_384)
    carry.copy_parts(manifest, tmp_path / "parts", tmp_path / "first", [0, 1])
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == [
        "carry.manifest.json", "carry.part000", "carry.part001"]
    with pytest.raises(runs.ArtifactError, match="carry.part002 is missing"):
        carry.unpack(tmp_path / "first", tmp_path / "copy")


# --------------------------------------------------------------------------- exact continuation


@pytest.mark.slow
def test_stopped_packed_unpacked_and_continued_equals_an_uninterrupted_run(
        tmp_path: Path, fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = tiny_cfg(tmp_path / "full", fake_cache)
    full_log = train_model(full, "coarse", progress=False)
    # The loan's clock: two epochs fit before the deadline, the third would not.
    clock = itertools.chain([0.0, 0.0], itertools.repeat(2e9))
    monkeypatch.setattr(train_mod, "_now", lambda: next(clock))
    cut = tiny_cfg(tmp_path / "cut", fake_cache)
    runs.create_run(cut)
    assert [r["epoch"] for r in train_model(cut, "coarse", progress=False, deadline=1e9)] == [1, 2]
    assert runs.load_torch(tmp_path / "cut" / "coarse" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(train_mod, "_now", lambda: 0.0)
    manifest = carry.pack(tmp_path / "cut", tmp_path / "parts", part_bytes=65_536)
    assert len(manifest["parts"]) >= 2 and manifest["epochs_done"] == {"coarse": 2}
    carry.unpack(tmp_path / "parts", tmp_path / "next")
    torch.manual_seed(12345)  # the next machine's global RNG is anywhere
    cont = tiny_cfg(tmp_path / "next", fake_cache)
    log = train_model(cont, "coarse", progress=False, deadline=1e9)
    assert without_seconds(log) == without_seconds(full_log)
    a, b = (runs.load_torch(tmp_path / d / "coarse" / "last.pt") for d in ("full", "next"))
    for key in ("model", "optimizer"):
        flat_a, flat_b = _tensors(a[key]), _tensors(b[key])
        assert flat_a.keys() == flat_b.keys()
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), key
    final = [runs.load_torch(tmp_path / d / "coarse" / "checkpoints" / "epoch_004.pt")["model"]
             for d in ("full", "next")]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict, by dotted key."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.slow
def test_the_train_stage_leaves_later_models_for_the_next_call(
        tmp_path: Path, fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(tmp_path / "run", fake_cache, train_baseline=True)
    monkeypatch.setenv("NBUTILS_DEADLINE", "1000000")  # 1970: the coarse model stops at once
    assert stages.train(cfg, progress=False) == {"coarse": []}
    assert not (tmp_path / "run" / "baseline").exists()
    monkeypatch.delenv("NBUTILS_DEADLINE")
    logs = stages.train(cfg, progress=False)
    assert [log[-1]["epoch"] for log in logs.values()] == [cfg.epochs, cfg.epochs]
