"""Headless entry points: `python -m nbutils reproduce|train|analyze ...`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from nbutils import carry, results, run_index, site, stages, verify
from nbutils.analysis import feature_norm_ablation
from nbutils.config import PARAMETERS, PROFILES, resolve
from nbutils.distributed import preflight
from nbutils.lock import RunLocked
from nbutils.paths import FIGURES_DIR, REPO
from nbutils.plots import render_run
from nbutils.reproduce import (
    EXPERIMENTS,
    NotebookFailed,
    notebook_parameter_names,
    reproduce,
    run_experiments,
)
from nbutils.run_data import load_run_data
from nbutils.runs import (
    ArtifactError,
    RunConfigMismatch,
    check_run_dir,
    create_run,
    load_run,
    save_json,
)
from nbutils.seeds import write_seeds
from nbutils.your_features import analyze_features_file, summary_lines


def parse_set(items: list[str], allowed: tuple[str, ...] | list[str] = PARAMETERS
              ) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as JSON when they parse, else as strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: expected key=value, got {item!r}")
        if key not in allowed:
            raise SystemExit(f"--set: unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters given on the command line (named flags and --set)."""
    named = {k: getattr(args, k) for k in ("data_root", "mapping", "width", "epochs", "seed")}
    return {**{k: v for k, v in named.items() if v is not None}, **parse_set(args.set)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m nbutils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("reproduce", "run notebooks 01-05 through papermill"),
                       ("train", "train the coarse model and the baseline (torchrun-ready)"),
                       ("analyze", "features, collapse metrics, recovery and results.json")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--profile", default="paper" if name == "reproduce" else "ci",
                       choices=sorted(PROFILES))
        p.add_argument("--run-dir", dest="run_dir")
        p.add_argument("--data-root", dest="data_root")
        p.add_argument("--mapping")
        p.add_argument("--width", type=int)
        p.add_argument("--epochs", type=int)
        p.add_argument("--seed", type=int)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"any other parameter: {', '.join(PARAMETERS)}")
        p.add_argument("--force", action="store_true",
                       help="overwrite a run directory made with a different configuration")
        p.add_argument("--no-progress", dest="progress", action="store_false")
    exps = sub.add_parser("experiments", help="execute notebooks 06-10 and 12 (finished runs "
                                              "reused) and publish their executed copies")
    exps.add_argument("--only", help="comma-separated names, e.g. 06_dynamics,10_synthetic")
    exps.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="a parameter of the one --only notebook (value read as JSON), e.g. "
                           "weight_decays=[5e-4,5e-5]")
    sub.add_parser("readme", help="rebuild the README results table and docs/results.md's "
                                  "summaries from figures/*/results.json")
    render = sub.add_parser("render", help="draw a finished run's figures without its features "
                                           "(e.g. a run analysed on a GPU box and copied back)")
    render.add_argument("--run-dir", dest="run_dir", required=True)
    render.add_argument("--publish-dir", dest="publish_dir",
                        help="also copy figures, results and logs there (e.g. figures/paper)")
    render.add_argument("--no-umap", dest="umap", action="store_false")
    norms = sub.add_parser("feature-norms", help="recovery under each feature normalisation")
    norms.add_argument("--run-dir", dest="run_dir", required=True)
    norms.add_argument("--out", required=True, help="JSON file to write, e.g. figures/cpu/...")
    feats = sub.add_parser("analyze-features", help="NC metrics and fine-label recovery of "
                                                    "your own network's features (an npz file)")
    feats.add_argument("file", metavar="FILE.npz", help="train_features, train_labels, "
                       "test_features, test_labels, fine_to_coarse (see nbutils.your_features)")
    feats.add_argument("--out", help="output folder (default: FILE_analysis beside FILE.npz)")
    feats.add_argument("--n-init", dest="n_init", type=int, default=10)
    feats.add_argument("--seed", type=int, default=0)
    feats.add_argument("--feature-norm", dest="feature_norm", default="l2",
                       help="none | l2 | center_l2 | standardize")
    intervals = sub.add_parser("intervals", help="add the bootstrap intervals (ci95) to published "
                                                 "results.json files, in place")
    intervals.add_argument("results_json", nargs="+", metavar="RESULTS_JSON")
    seeds = sub.add_parser("seeds", help="mean and sd over the seeds of one profile's runs")
    seeds.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    seeds.add_argument("--out", required=True, help="e.g. figures/cpu/seeds.json")
    index = sub.add_parser("runs-index", help="figures/experiments/runs.csv: one row per trained "
                                              "run of notebooks 06-10, 12 and of the cpu and full "
                                              "seeds")
    index.add_argument("--experiments", default=str(FIGURES_DIR / "experiments"),
                       help="folder of the experiments' results JSON (their 'runs' rows)")
    index.add_argument("--figures", default=str(FIGURES_DIR),
                       help="folder of the published profiles (<profile>/results.json, "
                            "<profile>/seeds/*/results.json)")
    index.add_argument("--out", default=str(FIGURES_DIR / "experiments" / "runs.csv"))
    site_parser = sub.add_parser("site", help="the README, docs/ and the executed notebooks as "
                                              "one static HTML site (MkDocs), links checked")
    site_parser.add_argument("--out", default=str(site.BUILD_DIR),
                             help="build folder: staged sources in src/, the site in site/")
    sub.add_parser("verify", help="recompute the headline numbers from the committed small files "
                                  "(compact.npz, per-seed results, histories) and compare")
    packer = sub.add_parser("pack", help="a run's resume state (last.pt, config, logs) as "
                                         "checksummed parts of at most 16 MiB, with a manifest")
    packer.add_argument("run_dir", metavar="RUN_DIR")
    packer.add_argument("out_dir", metavar="OUT_DIR")
    packer.add_argument("--name", default="carry", help="prefix of the parts and manifest")
    packer.add_argument("--models", help="coarse,baseline (default: every model with a last.pt)")
    packer.add_argument("--part-mib", dest="part_mib", type=float, default=15.0,
                        help="largest part in MiB (at most 16)")
    packer.add_argument("--checkpoints", action="store_true",
                        help="also carry the checkpoints (large: 45 MB each at w=64)")
    unpacker = sub.add_parser("unpack", help="check every part of a pack, then restore it into "
                                             "a run directory (then train --resume continues)")
    unpacker.add_argument("parts_dir", metavar="PARTS_DIR")
    unpacker.add_argument("run_dir", metavar="RUN_DIR")
    unpacker.add_argument("--name", default="carry")
    sub.choices["reproduce"].add_argument("--publish-dir", dest="publish_dir")
    sub.choices["reproduce"].add_argument(
        "--yes", action="store_true",
        help="run even when the estimated cost on this machine passes 2 hours")
    sub.choices["train"].add_argument(
        "--models", help="coarse,baseline (default: coarse, and baseline if train_baseline)"
    )
    for name in ("train", "reproduce"):
        sub.choices[name].add_argument(
            "--resume", action=argparse.BooleanOptionalAction, default=True,
            help="continue from each model's last complete epoch (last.pt), the default",
        )
    return parser


def requested_models(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """The models `--models` names, by default those the config trains."""
    if text is None:
        return default
    models = tuple(m for m in text.split(",") if m)
    bad = sorted(set(models) - {"coarse", "baseline"})
    if bad or not models:
        raise ValueError(f"--models: unknown {bad or text!r}; allowed: coarse, baseline")
    return models


def cmd_train(args: argparse.Namespace) -> None:
    """Train the requested models of a run (one process, or every rank under torchrun)."""
    cfg = resolve(args.profile, run_dir=args.run_dir, **common_overrides(args))
    models = requested_models(args.models, cfg.models)
    _, ddp = preflight(cfg)
    data = load_run_data(cfg)
    # Every rank checks, so that a refused run directory stops them all, not rank 0 alone.
    check_run_dir(cfg, force=args.force)
    if ddp.main:
        with stages.writing(cfg):
            create_run(cfg, force=args.force)
    if ddp.world > 1:
        # The other ranks must not look for last.pt while --force is still deleting it.
        dist.barrier()
    logs = stages.train(cfg, data, models, resume=args.resume,
                        progress=args.progress and ddp.main)
    for model, log in logs.items():
        if ddp.main and log:
            # A run stopped at a deadline may end on an epoch without a test evaluation.
            test = log[-1]["test_acc"]
            print(f"{model}: epoch {log[-1]['epoch']} train_acc {log[-1]['train_acc']:.4f} "
                  f"test_acc {'-' if test is None else f'{test:.4f}'}")


def cmd_analyze(args: argparse.Namespace) -> None:
    """Every stage after training, without Jupyter: features, NC metrics, recovery, results."""
    cfg = load_run(args.run_dir, args.profile, **common_overrides(args))
    res = stages.analyze(cfg, progress=args.progress)
    print(results.markdown_table(res))


def cmd_render(args: argparse.Namespace) -> None:
    """Draw a finished run's figures from its JSON artifacts and compact.npz; maybe publish."""
    cfg = load_run(args.run_dir)
    for path in render_run(cfg, umap=args.umap):
        print(path)
    if args.publish_dir:
        print(f"published to {stages.publish(cfg, Path(args.publish_dir))}")


def cmd_feature_norms(args: argparse.Namespace) -> None:
    """Write the feature-normalisation ablation of a finished run's last checkpoint."""
    cfg = load_run(args.run_dir)
    table = feature_norm_ablation(cfg)
    save_json(Path(args.out), {"run_dir": str(cfg.run_dir), "epoch": cfg.epochs,
                               "selection": "train_cluster_acc (train labels only)",
                               "by_feature_norm": table})
    for norm, m in table.items():
        print(f"{norm:12s} train {m['train_cluster_acc']:.4f}  test(a) "
              f"{m['test_acc_true_coarse']:.4f}  test(b) {m['test_acc_pred_coarse']:.4f}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    """Notebooks 01-05 through papermill, after the cost estimate."""
    reproduce(args.profile, run_dir=args.run_dir, force=args.force,
              publish_dir=args.publish_dir, resume=args.resume, yes=args.yes,
              **common_overrides(args))


def cmd_experiments(args: argparse.Namespace) -> None:
    """Notebooks 06-10 and 12 through papermill, executed copies published."""
    names = tuple(n for n in (args.only or "").split(",") if n) or EXPERIMENTS
    parameters = {}
    if args.set:
        if len(names) != 1:
            raise SystemExit(f"--set: parameters belong to one notebook; name it with --only "
                             f"(one of {', '.join(EXPERIMENTS)})")
        parameters = parse_set(args.set, notebook_parameter_names(names[0]))
    for path in run_experiments(names, parameters=parameters):
        print(path)


def cmd_analyze_features(args: argparse.Namespace) -> None:
    """NC metrics and recovery of a features file of one's own network."""
    result, out = analyze_features_file(args.file, args.out, args.n_init, args.seed,
                                        args.feature_norm)
    print("\n".join([*summary_lines(result), f"written to {out}"]))


def cmd_intervals(args: argparse.Namespace) -> None:
    """Bootstrap intervals added to published results.json files."""
    for path in args.results_json:
        missing = results.add_published_intervals(Path(path)).get("not_recomputed", {})
        print(f"{path}: ci95 added" + (f"; not recomputed: {', '.join(missing)}"
                                       if missing else ""))


def cmd_seeds(args: argparse.Namespace) -> None:
    """seeds.json of one profile's runs over several seeds."""
    summary = write_seeds([Path(d) for d in args.run_dirs], Path(args.out))
    print(f"{args.out}: profile {summary['profile']}, seeds {summary['seeds']}, "
          f"{len(summary['summary'])} quantities")
    # Runs whose phase was logged during training: what changes from onset to end; runs with
    # their per-pair counterfactuals (nbutils.pairs): those over seeds.
    for name, record in verify.over_seeds_records([Path(d) for d in args.run_dirs]).items():
        path = Path(args.out).with_name(name)
        save_json(path, record)
        print(f"{path}: over seeds {record['seeds']}")


def cmd_runs_index(args: argparse.Namespace) -> None:
    """runs.csv from the experiments' JSON and the published profiles' seeds."""
    frame = run_index.write_index(Path(args.experiments),
                                  {p: Path(args.figures) / p for p in run_index.SEED_PROFILES},
                                  Path(args.out))
    print(f"{args.out}: {len(frame)} runs")


def cmd_pack(args: argparse.Namespace) -> None:
    """Pack a run's resume state into checksummed parts."""
    models = requested_models(args.models, carry.MODELS) if args.models else None
    part_bytes = round(args.part_mib * carry.MIB)
    if not 0 < part_bytes <= carry.MAX_PART_BYTES:
        raise ValueError(f"--part-mib: must be in (0, 16], got {args.part_mib}")
    manifest = carry.pack(Path(args.run_dir), Path(args.out_dir), args.name, part_bytes,
                          models, args.checkpoints)
    print(f"{carry.describe(manifest)} -> {args.out_dir}")


def cmd_unpack(args: argparse.Namespace) -> None:
    """Check a pack's parts and restore the run's resume state."""
    manifest = carry.unpack(Path(args.parts_dir), Path(args.run_dir), args.name)
    print(f"{carry.describe(manifest)} -> {args.run_dir}")


def cmd_verify(args: argparse.Namespace) -> None:
    """Every check of nbutils.verify; a mismatch is an error (exit status 2)."""
    for what, n in verify.counts().items():
        print(f"{what}: {n}")
    found = verify.verify()
    for name, mismatches in found.items():
        print(f"{name}: {'ok' if not mismatches else f'{len(mismatches)} mismatch(es)'}")
        for line in mismatches:
            print(f"  {line}")
    if any(found.values()):
        raise ValueError("the committed files disagree with what they were computed from (above)")


def cmd_readme(args: argparse.Namespace) -> None:
    """The README's results table and docs/results.md's paragraphs, rebuilt."""
    changed = stages.refresh_docs()
    print("updated: " + (", ".join(str(p.relative_to(REPO)) for p in changed)
                         if changed else "nothing, already up to date"))


def cmd_site(args: argparse.Namespace) -> None:
    """Build the static site; a failed build or a broken link is an error."""
    print(site.build(out=Path(args.out)) / "index.html")


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "reproduce": cmd_reproduce, "train": cmd_train, "analyze": cmd_analyze,
    "experiments": cmd_experiments, "readme": cmd_readme, "render": cmd_render,
    "feature-norms": cmd_feature_norms, "analyze-features": cmd_analyze_features,
    "intervals": cmd_intervals, "seeds": cmd_seeds, "runs-index": cmd_runs_index,
    "pack": cmd_pack, "unpack": cmd_unpack, "verify": cmd_verify, "site": cmd_site,
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch a sub-command; errors in parameters exit with their message."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, ArtifactError, RunConfigMismatch, RunLocked, NotebookFailed,
            site.SiteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
