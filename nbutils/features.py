"""Eval-mode penultimate features of every saved checkpoint, written into the run directory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from nbutils import checks
from nbutils.config import RunConfig
from nbutils.data import normalize, stats_tensors, to_tensor
from nbutils.device import select_device
from nbutils.phase import clean_train_curve, terminal_phase
from nbutils.progress import tqdm
from nbutils.run_data import RunData, load_run_data
from nbutils.runs import (
    ArtifactError,
    checkpoint_path,
    clear_temporaries,
    features_path,
    load_json,
    load_npz,
    model_dir,
    record_time,
    save_npz,
)
from nbutils.train import load_model


@torch.no_grad()
def extract(
    model: torch.nn.Module, images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor],
    batch_size: int, progress: bool = False, desc: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 features N x D, head predictions N) of uint8 NCHW `images`, in batches."""
    model.eval()
    feats, preds = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False,
                      disable=not progress):
        x = normalize(images[start:start + batch_size], *stats)
        # float32, no autocast: NC1 measures a small within-class spread that bf16 would blur.
        h, logits = model.forward_with_features(x.contiguous(memory_format=torch.channels_last))
        feats.append(h.float())
        preds.append(logits.argmax(1))
    return torch.cat(feats).cpu().numpy(), torch.cat(preds).cpu().numpy()


def extract_checkpoint(
    cfg: RunConfig, model_name: str, epoch: int, data: RunData, device: torch.device,
    progress: bool = True,
) -> Path:
    """Compute and save train/test features of one checkpoint; returns the file."""
    num_classes = data.num_classes(model_name)
    model = load_model(cfg, model_name, epoch, num_classes, device)
    stats = stats_tensors(cfg.dataset, device)
    arrays = {}
    for split in ("train", "test"):
        images = to_tensor(getattr(data, split).images, device)
        feats, preds = extract(model, images, stats, cfg.eval_batch_size, progress,
                               desc=f"{model_name} epoch {epoch} {split}")
        arrays[f"{split}_features"] = feats
        arrays[f"{split}_pred"] = preds
        arrays[f"{split}_fine"] = getattr(data, split).labels
    return save_npz(
        features_path(cfg, model_name, epoch), **arrays,
        head_weight=model.head.weight.detach().cpu().numpy(),
        head_bias=model.head.bias.detach().cpu().numpy(),
        fine_to_coarse=data.fine_to_coarse, epoch=np.int64(epoch),
    )


def feature_epochs(cfg: RunConfig, model_name: str) -> list[int]:
    """Checkpoints of `model_name` whose features the analysis reads (`cfg.feature_epochs`)."""
    if cfg.feature_epochs == "all":
        return list(cfg.checkpoint_epochs)
    curve = clean_train_curve(load_json(model_dir(cfg, model_name) / "log.json"))
    if not curve["epochs"]:
        raise ArtifactError(f"feature_epochs='phase': {model_dir(cfg, model_name)}/log.json holds "
                            "no clean train accuracy (train with clean_train_eval=True)")
    marks = {cfg.epochs}
    if model_name == "coarse":
        # Init is the random-init control; the onset is where the dynamics are read from.
        onset = terminal_phase(curve["epochs"], curve["accs"])["onset_epoch"]
        marks |= {0} | ({onset} if onset is not None else set())
    return sorted(marks)


def extract_run(
    cfg: RunConfig, models: tuple[str, ...] | None = None, overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Features of every checkpoint of every trained model; existing files are kept.

    Each file is written atomically, so a run killed here resumes with the first missing one.
    """
    checks.flag("overwrite", overwrite)
    models = models or cfg.models
    device = select_device(cfg.device)
    for m in models:
        clear_temporaries(features_path(cfg, m, 0).parent)
    data = load_run_data(cfg)
    todo = [(m, e) for m in models for e in feature_epochs(cfg, m)
            if overwrite or not features_path(cfg, m, e).is_file()]
    missing = [str(checkpoint_path(cfg, m, e)) for m, e in todo
               if not checkpoint_path(cfg, m, e).is_file()]
    if missing:
        raise ArtifactError(
            "checkpoints missing (train them with notebook 01 first): " + ", ".join(missing)
        )
    t0 = time.perf_counter()
    for m, e in tqdm(todo, desc="checkpoints", disable=not progress):
        extract_checkpoint(cfg, m, e, data, device, progress)
    if todo:
        record_time(cfg, "features", time.perf_counter() - t0)
    return [features_path(cfg, m, e) for m in models for e in feature_epochs(cfg, m)]


def load_features(cfg: RunConfig, model_name: str, epoch: int) -> dict[str, np.ndarray]:
    """The saved feature arrays of one checkpoint."""
    return load_npz(features_path(cfg, model_name, epoch))
