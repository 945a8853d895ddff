"""'What we see': markdown sentences about one run, computed from its results.json.

Each notebook stage has one function (`training`, `collapse`, `recovery`, `umap`) that returns a
paragraph quoting this run's own numbers, profile, width, epochs and seeds, with the caveats that
apply to it: whether it reached the terminal phase (docs/protocol.md, section 11), how many seeds
a number rests on, and whether a difference lies inside its 95% bootstrap interval. Keys that an
older results.json lacks are left out of the text. `run_summary` joins the paragraphs for the
docs, and `update_docs` writes them between `<!-- summary:<profile>:start/end -->` markers.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbutils.data import NUM_FINE, class_names, coarse_mapping
from nbutils.phase import HOLD, THRESHOLD, terminal_phase_of
from nbutils.results import PAPER_TEST_ACC
from nbutils.runs import UNRECORDED_AMP, atomic_write, load_json
from nbutils.stats import spread, t_interval

PAPER_WIDTH = 64
WRAP = 100
MARKERS = re.compile(r"<!-- summary:([\w.-]+):start -->.*?<!-- summary:\1:end -->", re.S)
HEADLINE = "recovery.test_acc_pred_coarse"
MIN_SEEDS = 3


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal, as in the README table ('96.2%')."""
    return f"{100 * x:.1f}%"


def _points(d: float) -> str:
    """An absolute difference of fractions in percentage points."""
    return f"{100 * abs(d):.1f} points"


def interval(section: dict[str, Any] | None, key: str) -> tuple[float, float] | None:
    """The 95% bootstrap interval [lo, hi] of `section[key]` under `section['ci95']`, if any."""
    found = ((section or {}).get("ci95") or {}).get(key)
    return None if found is None else (float(found[0]), float(found[1]))


def acc(section: dict[str, Any], key: str) -> str:
    """`section[key]` as a percentage, followed by its 95% interval when one is recorded."""
    ci = interval(section, key)
    text = pct(section[key])
    return text if ci is None else f"{text} (95% CI {100 * ci[0]:.1f}–{pct(ci[1])})"


def compare(value: float, ci: tuple[float, float] | None, other: float, name: str, who: str,
            other_ci: tuple[float, float] | None = None) -> str:
    """How `value` (called `who`, interval `ci`) stands against `other`; no gap inside the CI.

    With `other_ci` too, the two are told apart only when their intervals do not overlap.
    """
    side = "above" if value > other else "below"
    text = f"{_points(value - other)} {side} {name}"
    if ci is None:
        return text
    if other_ci is not None:
        if max(ci[0], other_ci[0]) <= min(ci[1], other_ci[1]):
            return text + ", but their 95% intervals overlap: these test images do not resolve it"
        return text + ", and their 95% intervals do not overlap"
    if ci[0] <= other <= ci[1]:
        return text + (f", which lies inside the 95% interval of {who}: the two do not differ "
                       f"beyond test-set sampling")
    return text + f", outside the 95% interval of {who}"


def _seeds_phrase(res: dict[str, Any]) -> str:
    """'one training run, seed 0'."""
    return f"one training run, seed {res['seed']}"


def _phase(res: dict[str, Any]) -> dict[str, Any] | None:
    """terminal_phase_of(res), or None when the run recorded no per-checkpoint history."""
    return terminal_phase_of(res) if res.get("history") else None


def converged(res: dict[str, Any]) -> bool:
    """Whether the run reached the terminal phase (False when that cannot be read)."""
    phase = _phase(res)
    return bool(phase and phase["reached"])


def phase_sentence(res: dict[str, Any]) -> str:
    """Whether the run reached the terminal phase, from its clean coarse train accuracy."""
    phase = _phase(res)
    if phase is None:
        return ("The run records no per-checkpoint history, so whether it reached the terminal "
                "phase is not known; its statements about collapse count as before convergence.")
    history = res["history"]
    end = f"{pct(history[-1]['coarse_train_acc'])} at epoch {history[-1]['epoch']}"
    need = f"{100 * phase['hold']:.0f}% of training"
    if phase["reached"]:
        return (f"Clean (eval-mode) coarse train accuracy is at or above {pct(phase['threshold'])} "
                f"at every checkpoint from epoch {phase['onset_epoch']} on "
                f"({100 * phase['held_fraction']:.0f}% of training; {end}), so the run is in the "
                f"terminal phase (at least {need}).")
    if phase["onset_epoch"] is None:
        return (f"Clean (eval-mode) coarse train accuracy ends at {end}, below the "
                f"{pct(phase['threshold'])} that defines the terminal phase, so what this run "
                f"shows about collapse is before convergence.")
    onset = next(i for i, h in enumerate(history) if h["epoch"] == phase["onset_epoch"])
    before = (f"{pct(history[onset - 1]['coarse_train_acc'])} at epoch "
              f"{history[onset - 1]['epoch']}; " if onset else "")
    return (f"Clean (eval-mode) coarse train accuracy is at or above {pct(phase['threshold'])} "
            f"only from epoch {phase['onset_epoch']} on ({before}{end}), which covers "
            f"{100 * phase['held_fraction']:.0f}% of training by checkpoints, less than the "
            f"{need} that the terminal phase requires, so what this run shows about collapse is "
            f"before convergence.")


SCHEDULE_NAMES = {"onecycle": "one-cycle", "cosine": "cosine", "step": "step"}


def _recipe(res: dict[str, Any]) -> str:
    """'one-cycle schedule, peak lr 0.1, ..., bf16 autocast', from what the run recorded.

    A run trained without autocast (`amp` "off", e.g. `amp=auto` on a CPU without native bf16)
    says "float32", as `_precision_name` names it.
    """
    cfg = res.get("config") or {}
    parts = []
    if cfg:
        parts = [f"{SCHEDULE_NAMES.get(cfg['schedule'], cfg['schedule'])} schedule",
                 f"peak lr {cfg['lr']:g}", f"weight decay {cfg['weight_decay']:g}",
                 f"batch {cfg['batch_size']}"]
    if res.get("amp"):
        parts.append(_precision_name(res["amp"]))
    return ", ".join(parts)


def _epochs(n: int) -> str:
    """'1 epoch', '30 epochs'."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def _n_coarse(res: dict[str, Any]) -> int:
    """Number of super-classes of the run's mapping."""
    if res.get("recovery"):
        return len(res["recovery"]["per_superclass"])
    if res.get("mapping") == "cifar100":
        return 20
    return int(coarse_mapping(res["mapping"], res.get("dataset", "cifar10")).max()) + 1


def training(res: dict[str, Any]) -> str:
    """Notebook 01: what was trained, how far it got, and whether it reached the terminal phase.

    Before notebook 03 has measured the clean train accuracy of every checkpoint (a record from
    `stages.record`), it says so instead of judging the terminal phase.
    """
    n_coarse = _n_coarse(res)
    images = f" on {res['train_size']:,} train images" if res.get("train_size") else ""
    recipe = _recipe(res)
    device = f", on {res['device']}" if res.get("device") else ""
    parts = [
        f"The `{res['profile']}` run trains a CIFAR ResNet-18 of width {res['width']} on the "
        f"{n_coarse} super-classes of the `{res['mapping']}` mapping for {_epochs(res['epochs'])}"
        f"{images}, {_seeds_phrase(res)}{device}" + (f": {recipe}." if recipe else "."),
    ]
    coarse = res.get("coarse") or {}
    if coarse.get("test_acc") is not None:
        clean = (f" and {pct(coarse['train_acc'])} clean train accuracy"
                 if coarse.get("train_acc") is not None else "")
        parts.append(f"The coarse model reaches {acc(coarse, 'test_acc')} {n_coarse}-way test "
                     f"accuracy{clean}.")
    if (res.get("baseline") or {}).get("test_acc") is not None:
        parts.append(f"The same network trained with the same recipe on the {_n_fine(res)} fine "
                     f"labels reaches {acc(res['baseline'], 'test_acc')} test accuracy.")
    if res.get("history") or res.get("recovery"):
        parts.append(phase_sentence(res))
    else:
        parts.append("Whether the run reached the terminal phase is decided on its clean "
                     "(eval-mode) train accuracy at every checkpoint, which notebook 03 measures.")
    return " ".join(parts)


def features(res: dict[str, Any], files: list[Path]) -> str:
    """Notebook 02: what was extracted, or why a published run has no features."""
    if not files:
        return ("This run is published from its logs only: its checkpoints and features stayed "
                "on the machine that trained it, so notebooks 03-05 read their numbers from "
                "`collapse.json`, `recovery.json`, `results.json` and `compact.npz`.")
    size = sum(Path(f).stat().st_size for f in files) / 2**20
    return (f"{len(files)} feature files ({size:,.0f} MiB): every checkpoint of "
            f"{' and '.join(_models(res))}, {8 * res['width']}-dimensional float32 "
            f"penultimate features of the train and test images, computed in eval mode without "
            f"augmentation, with the head's predictions and weights.")


def _models(res: dict[str, Any]) -> list[str]:
    """'the coarse model', 'the 10-label baseline' as the run trained them."""
    out = ["the coarse model"]
    if (res.get("config") or {}).get("train_baseline", res.get("baseline") is not None):
        out.append(f"the {_n_fine(res)}-label baseline")
    return out


def _n_fine(res: dict[str, Any]) -> int:
    """Number of fine classes of the run's dataset."""
    return NUM_FINE[res.get("dataset", "cifar10")]


def _series(res: dict[str, Any], *path: str) -> list[tuple[int, float]]:
    """(epoch, value) of a nested history key, at the checkpoints that recorded it."""
    out = []
    for h in res.get("history") or []:
        value: Any = h
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            out.append((h["epoch"], float(value)))
    return out


def _g3(x: float) -> str:
    """Three significant digits, as the README table prints NC1."""
    return f"{x:.3g}"


def _course(series: list[tuple[int, float]], fmt: Callable[[float], str], what: str) -> str:
    """'what goes from A at epoch x to B at epoch y (highest: C at epoch z)'."""
    (e0, v0), (e1, v1) = series[0], series[-1]
    text = f"{what} goes from {fmt(v0)} at epoch {e0} to {fmt(v1)} at epoch {e1}"
    top_epoch, top = max(series, key=lambda p: p[1])
    if top_epoch not in (e0, e1):
        text += f" (highest: {fmt(top)} at epoch {top_epoch})"
    return text


def collapse(res: dict[str, Any]) -> str:
    """Notebook 03: NC metrics over training and the fine structure inside the super-classes."""
    parts = []
    coarse, fine = _series(res, "nc", "coarse", "nc1"), _series(res, "nc", "fine", "nc1")
    if coarse:
        text = _course(coarse, _g3, "On the train features, NC1 against the coarse labels")
        if fine:
            text += f", and against the fine labels from {fine[0][1]:.3g} to {fine[-1][1]:.3g}"
        parts.append(text + ".")
    end = (res.get("nc") or {}).get("coarse") or (res["history"][-1]["nc"]["coarse"]
                                                  if res.get("history") else {})
    named = (("NC2 equinorm", "nc2_equinorm", ".3g"), ("NC2 equiangularity", "nc2_equiangular",
             ".3g"), ("NC3", "nc3", ".3g"))
    found = [f"{label} {end[key]:{fmt}}" for label, key, fmt in named if end.get(key) is not None]
    if end.get("nc4") is not None:
        found.append(f"NC4 {100 * end['nc4']:.2g}% of train images")
    if found:
        parts.append("At the last checkpoint (coarse labels): " + ", ".join(found) + ".")
    share = _series(res, "nc", "fine_structure", "fine_variance_fraction_mean")
    within = _series(res, "nc", "fine_structure", "nc1_within_superclass_mean")
    if share:
        text = _course(share, pct, "The share of a super-class's variance that lies between "
                                   "its fine classes (mean over super-classes)")
        if within:
            text += (f"; the NC1 of the fine classes inside a super-class goes from "
                     f"{within[0][1]:.3g} to {within[-1][1]:.3g}")
        parts.append(text + ".")
    state = ("in the terminal phase" if converged(res)
             else "before convergence (see the training paragraph)")
    parts.append(f"These values come from {_seeds_phrase(res)}, {state}.")
    return " ".join(parts)


def _variants(rec: dict[str, Any], n_fine: int) -> list[str]:
    """The test variants the run recorded, as sentences."""
    parts = [f"On the test set, the nearest train centroid gives "
             f"{acc(rec, 'test_acc_true_coarse')} within each image's true super-class (a)"]
    if rec.get("test_acc_pred_coarse") is not None:
        parts[0] += (f" and {acc(rec, 'test_acc_pred_coarse')} within the super-class the "
                     f"network predicts (b), a complete {n_fine}-way classifier in which a wrongly "
                     f"predicted super-class counts as an error")
    parts[0] += "."
    fitted = [(key, letter, where) for key, letter, where in (
        ("test_cluster_acc_true_coarse", "c", "true"),
        ("test_cluster_acc_pred_coarse", "d", "predicted")) if rec.get(key) is not None]
    if fitted:
        parts.append("k-means fitted on the test features of each super-class gives "
                     + " and ".join(f"{acc(rec, k)} inside the {w} super-class ({c})"
                                    for k, c, w in fitted) + ".")
    return parts


def _baseline_and_paper(res: dict[str, Any]) -> list[str]:
    """(b) against the 10-label baseline and against the paper's 93%."""
    rec = res["recovery"]
    b, ci = rec.get("test_acc_pred_coarse"), interval(rec, "test_acc_pred_coarse")
    if b is None:
        return []
    parts = []
    if res.get("baseline"):
        base = res["baseline"]["test_acc"]
        versus = compare(b, ci, base, f"the 10-label baseline's {pct(base)}", "(b)",
                         interval(res["baseline"], "test_acc"))
        parts.append(f"Variant (b) is {versus} (ratio {b / base:.3f}).")
    width = "" if res["width"] == PAPER_WIDTH else f" at width {res['width']}"
    paper = f"{100 * PAPER_TEST_ACC:.0f}%"
    versus = compare(b, ci, PAPER_TEST_ACC, f"the paper's {paper}", "(b)")
    parts.append(f"The paper reports {paper} for width {PAPER_WIDTH}, without saying which of "
                 f"these variants it measures; this run's (b){width} is {versus}.")
    if ci is None:
        parts.append("No bootstrap interval is recorded for this run, so how much of these "
                     "differences test-set sampling alone could produce is not measured.")
    return parts


def _seed_stat(seeds: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The over-seeds mean and sd of `key` in a seeds.json, when it rests on 2 or more seeds."""
    stat = ((seeds or {}).get("summary") or {}).get(key)
    return stat if stat and stat.get("sd") is not None else None


def _over_seeds(stat: dict[str, Any]) -> str:
    """'92.1% ± 0.4 points'."""
    return f"{pct(stat['mean'])} ± {100 * stat['sd']:.1f} points"


def _seeds_sentence(res: dict[str, Any], seeds: dict[str, Any] | None) -> str:
    """How many training runs the recovery numbers rest on."""
    stat = _seed_stat(seeds, HEADLINE)
    if stat is None:
        return (f"All of these numbers come from {_seeds_phrase(res)}: the spread over training "
                f"seeds is not measured, and the protocol quotes headline numbers and differences "
                f"only over at least {MIN_SEEDS} seeds.")
    listed = ", ".join(str(s) for s in seeds.get("seeds", []))
    text = f"Over {stat['n']} training seeds ({listed}), (b) is {_over_seeds(stat)}"
    base = _seed_stat(seeds, "baseline.test_acc")
    if base is not None:
        text += f" and the 10-label baseline {_over_seeds(base)}"
    text += " (mean ± sample sd, ddof=1)."
    if stat["n"] < MIN_SEEDS:
        text += (f" That is fewer than the {MIN_SEEDS} seeds the protocol asks for before a "
                 f"headline number or a difference is claimed.")
    return text


def recovery(res: dict[str, Any], seeds: dict[str, Any] | None = None) -> str:
    """Notebook 04: the fine labels recovered from the coarse model's features, with controls."""
    rec = res["recovery"]
    norm = (res.get("config") or {}).get("feature_norm")
    normed = f", features {norm}-normalised" if norm and norm != "none" else ""
    parts = [f"k-means inside each super-class of the coarse model's train features (clusters "
             f"matched to fine labels by the Hungarian method on train{normed}) gives each train "
             f"image the right fine label for {acc(rec, 'train_cluster_acc')} of them."]
    parts += _variants(rec, _n_fine(res))
    if rec.get("ci95"):
        parts.append("Intervals are 95% percentile-bootstrap intervals over the evaluated images: "
                     "they measure image sampling only, not the spread over training seeds.")
    scores = [f"NMI {rec['nmi']:.3f}", f"ARI {rec['ari']:.3f}"]
    if rec.get("nmi_within_superclass") is not None:
        scores.append(f"NMI within super-classes {rec['nmi_within_superclass']:.3f}")
    parts.append("On train: " + ", ".join(scores) + ".")
    if rec.get("linear_probe_test_acc") is not None:
        parts.append(f"A linear probe trained on the recovered train labels scores "
                     f"{acc(rec, 'linear_probe_test_acc')} on test.")
    parts += _controls(res)
    parts += _baseline_and_paper(res)
    parts.append(_seeds_sentence(res, seeds))
    if not converged(res):
        parts.append("The run is before convergence, so these numbers describe recovery before "
                     "the terminal phase, not in the converged regime the paper describes.")
    return " ".join(parts)


def _controls(res: dict[str, Any]) -> list[str]:
    """The random-init and raw-pixel controls, variant (a)."""
    ctrl = res.get("controls") or {}
    found = [(name, ctrl[key]) for key, name in (
        ("random_init", "the features of the randomly initialised network"),
        ("raw_pixels", "raw pixels"))
             if (ctrl.get(key) or {}).get("test_acc_true_coarse") is not None]
    if not found:
        return []
    per = _n_fine(res) / len(res["recovery"]["per_superclass"])
    chance = f"; chance is {100 / per:.3g}%" if per.is_integer() else ""
    return ["With the same protocol, variant (a) reaches "
            + " and ".join(f"{acc(c, 'test_acc_true_coarse')} on {n}"
                           for n, c in found) + f"{chance}."]


def superclass_names(res: dict[str, Any]) -> list[str] | None:
    """'airplane/dog', ... per super-class for CIFAR-10 runs; None where names are not known."""
    if res.get("dataset", "cifar10") != "cifar10":
        return None
    f2c = coarse_mapping(res["mapping"], "cifar10")
    names = class_names("cifar10", len(f2c))
    return ["/".join(names[f] for f in range(len(f2c)) if f2c[f] == s)
            for s in range(int(f2c.max()) + 1)]


def _range(values: list[float | None], names: list[str] | None) -> str:
    """'from 92.1% (bird/horse) to 99.4% (deer/truck)' over the super-classes."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    (lo, i), (hi, j) = min(known), max(known)
    label = (lambda k: f" ({names[k]})") if names else (lambda k: f" (super-class {k})")
    return f"from {pct(lo)}{label(i)} to {pct(hi)}{label(j)}"


def umap(res: dict[str, Any]) -> str:
    """Notebook 05: what the UMAP pictures are, and the numbers that stand behind them."""
    points = (res.get("config") or {}).get("umap_points")
    sample = f"a stratified sample of about {points:,}" if points else "a stratified sample of"
    rec, names = res["recovery"], superclass_names(res)
    parts = [f"The UMAP views embed {sample} train features of the coarse model's last "
             f"checkpoint (epoch {res['epochs']}): all of them coloured by super-class, then "
             f"each super-class alone coloured by fine label. They are pictures, not measurements; "
             f"the numbers behind them are the per-super-class recoveries."]
    if rec.get("per_superclass_train"):
        parts.append(f"Train clustering accuracy per super-class ranges "
                     f"{_range(rec['per_superclass_train'], names)}, and test accuracy (a) "
                     f"{_range(rec['per_superclass'], names)}.")
    else:
        parts.append(f"Test accuracy (a) per super-class ranges "
                     f"{_range(rec['per_superclass'], names)}.")
    return " ".join(parts)


def run_summary(res: dict[str, Any], seeds: dict[str, Any] | None = None) -> str:
    """The four stage paragraphs of one run, wrapped for a markdown file."""
    paragraphs = (training(res), collapse(res), recovery(res, seeds), umap(res))
    return "\n\n".join(textwrap.fill(p, WRAP, break_long_words=False, break_on_hyphens=False)
                       for p in paragraphs)


def profile_summary(figures_dir: Path, profile: str) -> str:
    """run_summary of figures/<profile>/results.json, with seeds.json beside it when present."""
    folder = Path(figures_dir) / profile
    seeds_file = folder / "seeds.json"
    seeds = load_json(seeds_file) if seeds_file.is_file() else None
    return run_summary(load_json(folder / "results.json"), seeds)


def update_docs(path: Path, figures_dir: Path) -> bool:
    """Rewrite every `summary:<profile>` marked section of a markdown file; True if it changed."""
    path = Path(path)
    text = path.read_text()
    if not MARKERS.search(text):
        raise ValueError(f"{path} has no <!-- summary:<profile>:start/end --> markers")

    def block(match: re.Match) -> str:
        """The marked section of one profile, regenerated."""
        profile = match.group(1)
        return (f"<!-- summary:{profile}:start -->\n{profile_summary(figures_dir, profile)}\n"
                f"<!-- summary:{profile}:end -->")

    return _rewrite(path, text, MARKERS.sub(block, text))


def _rewrite(path: Path, old: str, new: str) -> bool:
    """Write `new` to `path` atomically when it differs from `old`; whether it did."""
    if new != old:
        atomic_write(path, lambda p: p.write_text(new))
    return new != old


# Dynamics (notebook 06): how each measure moves from the terminal-phase onset to the end.
DYNAMICS_MEASURES = {
    "recovery.test_acc_true_coarse": ("test recovery (a)", "pct"),
    "recovery.train_cluster_acc": ("train clustering recovery", "pct"),
    "nc.fine_structure.fine_variance_fraction_mean": ("between-fine share of a super-class's "
                                                      "variance", "pct"),
    "nc.fine_structure.nc1_within_superclass_mean": ("NC1 of the two fine classes in a "
                                                     "super-class", "g3"),
    "nc.coarse.nc1": ("coarse NC1", "g3"),
}


def _change_item(name: str, change: dict[str, Any], fmt: str) -> str:
    """'- **name**: A -> B, mean change c, 95% interval over seeds [lo, hi]: verdict.'"""
    rows = change["per_seed"]
    show = pct if fmt == "pct" else _g3
    diff = ((lambda d: f"{100 * d:+.1f}") if fmt == "pct" else (lambda d: f"{d:+.3g}"))
    unit = " points" if fmt == "pct" else ""
    start = sum(r["at_tpt"] for r in rows) / len(rows)
    end = sum(r["end"] for r in rows) / len(rows)
    ci = t_interval([r["change"] for r in rows])
    mean = diff(change["change"]["mean"])
    text = f"- **{name}**: {show(start)} → {show(end)}, mean change {mean}{unit}"
    if ci is None or len(rows) < MIN_SEEDS:
        return text + f"; {len(rows)} seed(s), too few to call a change."
    verdict = ("it falls" if ci[1] < 0 else "it rises" if ci[0] > 0
               else "the interval includes zero, no change resolved")
    return text + f", 95% interval over seeds [{diff(ci[0])}, {diff(ci[1])}]{unit}: {verdict}."


def dynamics(summary: dict[str, Any], changes: dict[str, Any]) -> str:
    """What the dynamics runs show: terminal phase per seed, then each measure's change."""
    phases, n = summary["phase"], len(summary["phase"])
    reached = [s for s, p in zip(summary["seeds"], phases, strict=True) if p["reached"]]
    onsets = [p["onset_epoch"] for p in phases if p["reached"]]
    head = (f"{summary['setting']}. The terminal phase (clean coarse train accuracy at or above "
            f"{pct(summary['threshold'])} at every checkpoint to the end, over at least "
            f"{100 * summary['hold']:.0f}% of training) is reached by {len(reached)} of {n} seeds")
    if not reached:
        return head + ", so this experiment says nothing about the terminal phase."
    head += (f" (seeds {', '.join(map(str, reached))}; onsets at epochs "
             f"{', '.join(map(str, onsets))}, known to one checkpoint). From the onset to the end "
             f"of training, mean over those seeds, with a Student-t interval over seeds:")
    items = [_change_item(name, changes[path], fmt)
             for path, (name, fmt) in DYNAMICS_MEASURES.items() if changes.get(path)]
    tail = ("Train and test recovery are reported apart: a fall on test alone would be a "
            "train/test gap, not fine structure lost from the features.")
    return "\n\n".join([textwrap.fill(head, WRAP, break_long_words=False), "\n".join(items),
                         tail])


# Your own features (notebook 11): each recovery number beside its chance level.
FEATURE_NUMBERS = {
    "train_cluster_acc": "Train clustering accuracy",
    "test_acc_true_coarse": "Test recovery (a), inside the true super-class,",
    "test_acc_pred_coarse": "Test recovery (b), inside the predicted super-class,",
    "test_cluster_acc_true_coarse": "Test recovery (c), the test set clustered inside the true "
                                    "super-class,",
}


def your_features(result: dict[str, Any]) -> str:
    """What an analyze_features result shows: recovery against chance, and collapse."""
    rec, chance, nc = result["recovery"], result["chance"], result["nc"]
    f2c = result["fine_to_coarse"]
    parts = [f"One set of features ({len(f2c)} fine classes in {len(set(f2c.values()))} "
             f"super-classes), so no spread over training seeds is known."]
    for key, name in FEATURE_NUMBERS.items():
        if rec.get(key) is not None:
            side = "above" if rec[key] >= chance[key] else "below"
            parts.append(f"{name} is {pct(rec[key])}, {_points(rec[key] - chance[key])} {side} "
                         f"its chance level of {pct(chance[key])}.")
    coarse, fine = nc["coarse"].get("nc1"), nc["fine"].get("nc1")
    if coarse is not None and fine is not None:
        parts.append(f"NC1 is {_g3(coarse)} against the super-classes and {_g3(fine)} against the "
                     f"fine classes; the fine classes hold on average "
                     f"{pct(nc['fine_structure']['fine_variance_fraction_mean'])} of their "
                     f"super-class's variance between them.")
    return textwrap.fill(" ".join(parts), WRAP, break_long_words=False, break_on_hyphens=False)


# Hierarchies (notebook 08): per-mapping means over seeds, from the runs.csv rows of the file.
HIERARCHY_COLUMNS = {
    "final_clean_coarse_train_acc": "clean coarse train acc.",
    "coarse_test_acc": "coarse test acc.",
    "recovery_train": "recovery, train clustering",
    "recovery_test_a": "test (a)",
    "recovery_test_b": "test (b)",
    "recovery_test_c": "test (c)",
    "baseline_test_acc": "10-label baseline, test acc.",
    "between_fine_share": "between-fine share",
}
CONTROL_NAMES = {"baseline": "its separability in the 10-label baseline",
                 "random_init": "its separability at random initialisation",
                 "raw_pixels": "its separability in raw pixels"}


def _fraction(mean: float, sd: float, ratio: bool = False) -> str:
    """'97.2 ± 0.5%' (or '0.977 ± 0.004' for a ratio); no '±' without an sd; '-' without a mean."""
    if math.isnan(mean):
        return "-"
    if ratio:
        return f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"
    return pct(mean) if math.isnan(sd) else f"{100 * mean:.1f} ± {100 * sd:.1f}%"


def _spread_text(s: dict[str, Any] | None, ratio: bool = False) -> str:
    """A stats.spread record (over seeds, sample sd) as _fraction writes it; '-' when absent."""
    return "-" if not s else _fraction(s["mean"], s["sd"], ratio)


def _group_table(rows: list[dict[str, Any]], key: str, columns: dict[str, str]) -> str:
    """A markdown table, one line per value of `key` in first-seen order, mean ± sd of columns."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    lines = [f"| {key} | seeds | " + " | ".join(columns.values()) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for name, rs in groups.items():
        cells = [_spread_text(spread([math.nan if r[c] is None else float(r[c]) for r in rs]))
                 for c in columns]
        lines.append(f"| `{name}` | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _phase_count(rows: list[dict[str, Any]]) -> str:
    """'15 of 15 runs reach the terminal phase (onsets at epochs 190-220 of 300)', and which not."""
    reached = [r for r in rows if r["reached_terminal_phase"]]
    text = f"{len(reached)} of {len(rows)} runs reach the terminal phase"
    if reached:
        onsets = sorted(int(r["tpt_epoch"]) for r in reached)
        text += (f" (onsets at epochs {onsets[0]}-{onsets[-1]} of {int(reached[0]['epochs'])})"
                 if onsets[0] != onsets[-1] else f" (onset at epoch {onsets[0]})")
    missing = [f"{r['mapping']} seed {r['seed']}" for r in rows if not r["reached_terminal_phase"]]
    return text + (f"; not: {', '.join(missing)}" if missing else "")


PRECISIONS = {"off": "float32", "bfloat16": "bf16 autocast", "float16": "fp16 autocast"}
UNRECORDED = "unrecorded precision"


def _precision_name(amp: Any) -> str:
    """'float32', 'bf16 autocast', or 'unrecorded precision' for a row's `amp` entry."""
    if not isinstance(amp, str) or amp == UNRECORDED_AMP:
        return UNRECORDED
    return PRECISIONS.get(amp, f"{amp} autocast")


def precision(rows: list[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> str:
    """How the runs trained: one precision for all, or the count of each, naming the rarer runs.

    `amp=auto` trains in bf16 on CPUs with native bf16 and in float32 elsewhere, so a sweep that
    ran on several machines mixes them; the reader should see where.
    """
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(_precision_name(row.get("amp")), []).append(label(row))
    if len(groups) == 1:
        name = next(iter(groups))
        return (f"The {len(rows)} runs' training precision was not recorded."
                if name == UNRECORDED else f"All {len(rows)} runs trained in {name} (`amp=auto`).")
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    parts = [f"{name} in {len(names)}" for name, names in ranked[:1]]
    parts += [f"{name} in {len(names)} ({', '.join(names)})" for name, names in ranked[1:]]
    return ("Training precision followed each machine (`amp=auto`) and is mixed across runs: "
            + "; ".join(parts) + ".")


def _correlation_item(source: str, fit: dict[str, Any]) -> str:
    """'- its separability in the 10-label baseline: Pearson r = 0.81, ... (15 points).'."""
    if fit["pearson"] is None:
        return f"- {CONTROL_NAMES[source]}: undefined ({fit['n_pairs']} points)."
    return (f"- {CONTROL_NAMES[source]}: Pearson r = {fit['pearson']:.2f}, Spearman ρ = "
            f"{fit['spearman']:.2f}, slope {fit['slope']:.2f} ({fit['n_pairs']} points).")


def hierarchies(data: dict[str, Any]) -> str:
    """What the hierarchy runs show: terminal phase, per-mapping table, pairs against controls."""
    rows, controls = data["runs"], data["pair_controls"]
    head = (f"{data['setting']}. {_phase_count(rows)}. Mean ± sample sd (ddof=1) over seeds. "
            + precision(rows, lambda r: f"{r['mapping']} seed {r['seed']}"))
    split = controls["split"]
    lows = sorted(controls["rows"], key=lambda r: r["merged"][split]["mean"])
    lowest, highest = lows[0], lows[-1]
    pairs = (f"Per merged pair ({split} split), the merged recovery ranges from "
             f"{pct(lowest['merged'][split]['mean'])} ({lowest['pair']} in `{lowest['mapping']}`) "
             f"to {pct(highest['merged'][split]['mean'])} ({highest['pair']} in "
             f"`{highest['mapping']}`). Across the {len(lows)} (mapping, pair) points, a pair's "
             f"merged recovery against")
    items = [_correlation_item(src, fit) for src, fit in controls["correlations"].items()]
    tail = ("The points are not independent (a pair recurs across mappings with nearly the same "
            "controls), so no p-value is given.")
    return "\n\n".join([textwrap.fill(head, WRAP, break_long_words=False),
                         _group_table(rows, "mapping", HIERARCHY_COLUMNS),
                         textwrap.fill(pairs, WRAP, break_long_words=False),
                         "\n".join(items), tail])


def _share(flags: list[bool]) -> str:
    """'3 of 3'."""
    return f"{sum(map(bool, flags))} of {len(flags)}"


def grid(data: dict[str, Any]) -> str:
    """What the grid shows: terminal phase per cell, the selection metric, the chosen test."""
    best, by = data["best"], data["best"]["by"]
    cells = {}
    for row in data["runs"]:
        if row["experiment"] == "grid":
            cells.setdefault((row["lr"], row["weight_decay"]), []).append(
                bool(row["reached_terminal_phase"]))
    full = sum(all(v) for v in cells.values())
    head = (f"{data['setting']}, evaluated on {data['evaluated_on']}. {full} of {len(cells)} "
            f"cells have every seed in the terminal phase. Below: {data['labels'].get(by, by)} "
            f"on validation, mean ± sample sd over seeds, and how many seeds reached the phase. "
            + precision([r for r in data["runs"] if r["experiment"] == "grid"],
                        lambda r: f"lr {r['lr']:g} wd {r['weight_decay']:g} seed {r['seed']}"))
    wds = data["weight_decays"]
    lines = ["| lr \\ weight decay | " + " | ".join(f"{wd:g}" for wd in wds) + " |",
             "| --- | " + " | ".join("---" for _ in wds) + " |"]
    for i, lr in enumerate(data["lrs"]):
        row = []
        for j, wd in enumerate(wds):
            flags = cells.get((lr, wd), [])
            value = _fraction(data["mean"][by][i][j], data["sd"][by][i][j])
            row.append(f"{value} ({_share(flags)})")
        lines.append(f"| {lr:g} | " + " | ".join(row) + " |")
    if best["all_in_terminal_phase"]:
        pick = (f"The best cell among those whose every seed is in the terminal phase is lr "
                f"{best['lr']:g}, weight decay {best['weight_decay']:g} ({pct(best['value'])} "
                f"on validation).")
    else:
        pick = (f"No cell has every seed in the terminal phase, so the best of all cells was "
                f"taken, before convergence: lr {best['lr']:g}, weight decay "
                f"{best['weight_decay']:g} ({pct(best['value'])} on validation).")
    chosen = next(iter(data["chosen_test"].values()))
    tested = [r for r in data["runs"] if r["experiment"] == "grid-chosen"]
    phase = f" Of its coarse models, {_phase_count(tested)}." if tested else ""
    init = chosen.get("controls.random_init.test_acc_true_coarse")
    control = f"; at random initialisation, (a) {_spread_text(init)}" if init else ""
    pick += (f" Trained again on the train subset with its 10-label baseline "
             f"({len(chosen['seeds'])} seeds) and evaluated on the test set: recovery (a) "
             f"{_spread_text(chosen['recovery.test_acc_true_coarse'])}, (b) "
             f"{_spread_text(chosen['recovery.test_acc_pred_coarse'])}{control}; the baseline's "
             f"test accuracy {_spread_text(chosen['baseline.test_acc'])}; (b) / baseline "
             f"{_spread_text(chosen['ratio_to_baseline'], ratio=True)}.{phase}")
    return "\n\n".join([textwrap.fill(head, WRAP, break_long_words=False), "\n".join(lines),
                         *_short_of_phase(data), textwrap.fill(pick, WRAP, break_long_words=False)])


def _short_of_phase(data: dict[str, Any]) -> list[str]:
    """Why each cell short of the terminal phase is, as paragraphs: how long its seeds held."""
    held, acc = data.get("held"), data["mean"]["coarse.train_acc"]
    if held is None:
        return []
    items = []
    for i, lr in enumerate(data["lrs"]):
        for j, wd in enumerate(data["weight_decays"]):
            share = data["reached"][i][j]
            if math.isnan(share) or share == 1:
                continue
            spans = ", ".join(f"{100 * h:.0f}%" for h in held[i][j])
            items.append(f"- lr {lr:g}, weight decay {wd:g}: at or above {pct(THRESHOLD)} over "
                         f"the last {spans} of training by seed ({100 * HOLD:.0f}% needed); "
                         f"final clean coarse train accuracy {pct(acc[i][j])} (mean).")
    if not items:
        return []
    intro = ("Cells short of the terminal phase, and by how much (clean coarse train accuracy; "
             "0% means the last checkpoint is below the threshold):")
    return [textwrap.fill(intro, WRAP, break_long_words=False), "\n".join(items)]


def split(data: dict[str, Any]) -> str:
    """What the 20-label split shows: fit and memorisation on train, chance halves on test."""
    summary = data["summary"]
    parts = [f"{data['setting']}."]
    twenty = summary.get("20-label")
    if twenty:
        parts.append(
            f"The 20-label model reaches the terminal phase on its own 20 labels in "
            f"{_share(twenty['reached_terminal_phase'])} seeds (clean train accuracy on them "
            f"{_spread_text(twenty['own_train_acc'])}). Memorisation: among the train images "
            f"whose class it names correctly, it names the image's own half for "
            f"{_spread_text(twenty['head_half_acc_train'])}; on test, where the halves are a "
            f"fresh random split and chance by construction, "
            f"{_spread_text(twenty['head_half_acc_test'])}. Its halves, read as their "
            f"classes, give a 10-class test accuracy of "
            f"{_spread_text(twenty['class_test_acc'])}. Inside a class, k-means on the "
            f"train features separates the halves with "
            f"{_spread_text(twenty['train_cluster_acc'])} (test: "
            f"{_spread_text(twenty['test_acc_true_class'])}, chance by construction); the "
            f"halves hold {_spread_text(twenty['fine_variance_fraction'])} of their class's "
            f"variance between them.")
    ten = summary.get("10-label")
    if ten:
        parts.append(f"The 10-label model, which never sees the halves, separates them on train "
                     f"with {_spread_text(ten['train_cluster_acc'])}.")
    merged = summary.get("merged")
    if merged:
        parts.append(
            f"Beside them, the {merged['label']} ({_share(merged['reached_terminal_phase'])} "
            f"seeds in the terminal phase) separates its merged real classes with "
            f"{_spread_text(merged['train_cluster_acc'])} on train and "
            f"{_spread_text(merged['test_acc_true_class'])} on test (a), the two classes "
            f"holding {_spread_text(merged['fine_variance_fraction'])} of their super-class's "
            f"variance. Spreads are sample sd (ddof=1) over seeds.")
    return textwrap.fill(" ".join(parts), WRAP, break_long_words=False, break_on_hyphens=False)


def _nc1_text(s: dict[str, Any]) -> str:
    """An NC1 spread over seeds: '0.600 ± 0.035', or '0.600' for one seed."""
    mean = f"{s['mean']:#.3g}"
    return mean if math.isnan(s["sd"]) else f"{mean} ± {s['sd']:.2g}"


def _span(values: list[int], sep: str = "-") -> str:
    """'5-9' for a range of integers, or '5' when they are all equal."""
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}{sep}{hi}"


def synthetic(data: dict[str, Any]) -> str:
    """What the synthetic sweep shows: collapse and terminal phase, then recovery per separation."""
    runs, rows = data["runs"], data["by_separation"]
    reached = [r for r in runs if r["reached_terminal_phase"]]
    init = spread([r["nc1_coarse_init"] for r in runs])
    falls = [r["nc1_coarse_fall"]["mean"] for r in rows]
    head = (f"{data['setting']}. {len(reached)} of {len(runs)} runs reach the terminal phase "
            f"(clean coarse train accuracy at or above 99.5% to the end)")
    if reached:
        onsets = [int(r["tpt_epoch"]) for r in reached]
        held = [round(100 * r["tpt_held_fraction"]) for r in reached]
        head += (f", with onsets at epochs {_span(onsets)} of {int(reached[0]['epochs'])}, "
                 f"held for {_span(held)}% of training")
    head += (f". Coarse NC1 of the hidden layer is {_nc1_text(init)} at initialisation (sample "
             f"sd over all {len(runs)} runs) and falls by a mean "
             f"{_span([round(f) for f in falls], ' to ')}-fold by the end, depending on the "
             f"separation.")
    lines = ["| separation | raw inputs | hidden layer at init | hidden layer after training | "
             "between-fine share, init → end | NC1 fine after training |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['separation']:g} | {_spread_text(r['input_recovery'])} | "
            f"{_spread_text(r['init_recovery_test'])} | {_spread_text(r['final_recovery_test'])} | "
            f"{pct(r['init_fine_variance_fraction']['mean'])} → "
            f"{pct(r['final_fine_variance_fraction']['mean'])} | "
            f"{_nc1_text(r['final_nc1_fine'])} |")
    n = rows[0]["seeds"]
    tail = (f"Test recovery inside the true class, mean ± sample sd (ddof=1) over {n} "
            f"seed{'s' if n != 1 else ''}; the between-fine share as a mean over seeds.")
    return "\n\n".join([textwrap.fill(" ".join(head.split()), WRAP, break_long_words=False),
                         "\n".join(lines), tail])


def dynamics_summary_of(figures_dir: Path) -> str:
    """narrative.dynamics of the committed figures/experiments/dynamics.json."""
    data = load_json(Path(figures_dir) / "experiments" / "dynamics.json")
    return dynamics(data["summary"], data["terminal_changes"])


def hierarchies_summary_of(figures_dir: Path) -> str:
    """narrative.hierarchies of the committed figures/experiments/hierarchies.json."""
    return hierarchies(load_json(Path(figures_dir) / "experiments" / "hierarchies.json"))


def grid_summary_of(figures_dir: Path) -> str:
    """narrative.grid of the committed figures/experiments/grid.json."""
    return grid(load_json(Path(figures_dir) / "experiments" / "grid.json"))


def synthetic_summary_of(figures_dir: Path) -> str:
    """narrative.synthetic of the committed figures/experiments/synthetic.json."""
    return synthetic(load_json(Path(figures_dir) / "experiments" / "synthetic.json"))


def split_summary_of(figures_dir: Path) -> str:
    """narrative.split of the committed figures/experiments/split.json."""
    return split(load_json(Path(figures_dir) / "experiments" / "split.json"))


# The generated sections of docs/experiments.md, each between <!-- NAME:start/end --> markers.
EXPERIMENT_SECTIONS: dict[str, Callable[[Path], str]] = {
    "dynamics": dynamics_summary_of, "grid": grid_summary_of,
    "hierarchies": hierarchies_summary_of, "split": split_summary_of,
    "synthetic": synthetic_summary_of}
EXPERIMENT_MARKERS = re.compile(
    r"<!-- (" + "|".join(EXPERIMENT_SECTIONS) + r"):start -->.*?<!-- \1:end -->", re.S)


def update_experiments_docs(path: Path, figures_dir: Path) -> bool:
    """Rewrite every marked experiment section of docs/experiments.md; True if it changed."""
    path = Path(path)
    text = path.read_text()

    def block(match: re.Match) -> str:
        """One marked section, regenerated from its committed results file."""
        name = match.group(1)
        return (f"<!-- {name}:start -->\n{EXPERIMENT_SECTIONS[name](figures_dir)}\n"
                f"<!-- {name}:end -->")

    return _rewrite(path, text, EXPERIMENT_MARKERS.sub(block, text))
