"""Numbers in hand-written prose, each a token resolved from a committed results file.

A writer puts `{{source:dotted.path|format}}` where a number belongs, e.g.
`{{cpu_seeds:summary.recovery.test_acc_pred_coarse.mean|pct}}`; `render` replaces it by
`<!--t cpu_seeds:summary.recovery.test_acc_pred_coarse.mean|pct-->88.5%<!--/t-->`, which
markdown shows as the number alone, and re-rendering refreshes every such span from the files.
`python -m nbutils readme` renders the README and docs/*.md in place; tests/test_docs.py fails
while a rendered document differs from what its files give now, and on a result-like number
written outside a token in a document listed in TOKENISED.

- SOURCES names the results files a token may read (paths from the repository root).
- `lookup` is the one reader of dotted keys into those files: a key may itself hold dots (the
  summaries of seeds.json are keyed `recovery.test_acc_pred_coarse`), integers index lists
  (-1 is the last), `*` maps the rest of the path over every item of a list, and `key=value`
  picks the one item of a list whose `key` holds that number (`cells.weight_decay=5e-4`; a list
  of numbers comma-separated), so a token names a cell by its setting, not its position.
- FORMATS says how a value is written: a fraction as a percentage, points, a plain number, the
  range or Student-t interval of a list of values.
- `fill` is the notebooks' renderer: a notebook's closing "What we see" is a hand-written text
  whose tokens name its own run (`{{run:recovery.test_acc_pred_coarse|pct}}`), filled with bare
  values from the results the notebook passes in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbutils.paths import REPO
from nbutils.runs import atomic_write, load_json
from nbutils.stats import t_interval

SOURCES: dict[str, str] = {
    "cpu": "figures/cpu/results.json",
    "cpu_seeds": "figures/cpu/seeds.json",
    "paper": "figures/paper/results.json",
    "full": "figures/full/results.json",
    "full_seeds": "figures/full/seeds.json",
    "full_phase": "figures/full/phase_change.json",
    "full_axis": "figures/full/cluster_axis.json",
    "tpt_axis": "figures/tpt/cluster_axis.json",
    "full_pairs": "figures/full/pairs_seeds.json",
    "full_seed1": "figures/full/seeds/seed1/results.json",
    "full_seed2": "figures/full/seeds/seed2/results.json",
    "full_wd_pilot": "figures/full/wd_pilot.json",
    "full_aug_pilot": "figures/full/aug_pilot.json",
    "feature_norms": "figures/cpu/feature_norms.json",
    "amp_check": "figures/cpu/amp_check.json",
    "tpt_pilot": "figures/tpt/pilot.json",
    "dynamics": "figures/experiments/dynamics.json",
    "grid": "figures/experiments/grid.json",
    "hierarchies": "figures/experiments/hierarchies.json",
    "split": "figures/experiments/split.json",
    "synthetic": "figures/experiments/synthetic.json",
    "synthetic_pilot": "figures/experiments/synthetic_pilot.json",
    "strength": "figures/experiments/strength.json",
    # Epoch times of committed runs (each log.json is a list of epochs with their `seconds`).
    "cpu_log_baseline": "figures/cpu/logs/baseline/log.json",
    "paper_log": "figures/paper/logs/coarse/log.json",
    "paper_log_baseline": "figures/paper/logs/baseline/log.json",
    # benchmarks/train_throughput.py --json on the H200 of the committed `paper` run.
    "gpu_eager": "figures/paper/logs/device/throughput_probe_single.json",
    "gpu_pair0": "figures/paper/logs/device/throughput_probe_pair0.json",
    "gpu_pair1": "figures/paper/logs/device/throughput_probe_pair1.json",
    "gpu_compile": "figures/paper/logs/device/throughput_compile_default.json",
    "gpu_graphs": "figures/paper/logs/device/throughput_compile_reduce_overhead.json",
}


def _pct(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def _points(x: float) -> str:
    """A difference of fractions in signed percentage points."""
    return f"{100 * x:+.1f}"


def _interval(x: Any) -> str:
    """[low, high] of fractions as percentages."""
    low, high = _pair(x)
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def _interval_points(x: Any) -> str:
    """[low, high] of differences as signed percentage points."""
    low, high = _pair(x)
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def _mean_sd(x: Any, write: Callable[[float], str] = lambda v: f"{100 * v:.1f}",
             unit: str = "%") -> str:
    """A {mean, sd} entry as 'mean ± sd%'; the mean alone where no sd is defined (one seed)."""
    if not isinstance(x, dict) or "mean" not in x or "sd" not in x:
        raise ValueError(f"format pm needs a {{mean, sd}} entry, got {x!r}")
    sd = x["sd"]
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{write(_number(x['mean']))}{unit}"
    return f"{write(_number(x['mean']))} ± {write(_number(sd))}{unit}"


def _share_true(x: Any) -> str:
    """A list of booleans as 'k of n'."""
    if not isinstance(x, list) or not all(isinstance(v, bool) for v in x):
        raise ValueError(f"format of needs a list of true/false, got {x!r}")
    return f"{sum(x)} of {len(x)}"


def _values(x: Any) -> list[float]:
    """The numbers of a list, or of a seeds-summary entry's 'values'."""
    if isinstance(x, dict) and isinstance(x.get("values"), list):
        x = x["values"]
    if not isinstance(x, list) or not x:
        raise ValueError(f"needs a non-empty list of values (or an entry with 'values'), got {x!r}")
    return [_number(v) for v in x]


def _t95(x: Any) -> tuple[float, float]:
    """The Student-t 95% interval of the mean of a list of values (over seeds)."""
    ci = t_interval(_values(x))
    if ci is None:
        raise ValueError("a t interval needs at least 2 values")
    return ci


def _mean(x: Any) -> float:
    """The mean of a list of values."""
    values = _values(x)
    return sum(values) / len(values)


def _span(x: Any, write: Callable[[float], str], unit: str = "") -> str:
    """'low-high' of a list of values ('low' when all are equal), each written by `write`."""
    values = _values(x)
    low, high = write(min(values)), write(max(values))
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def _yes_no(x: Any) -> str:
    """A boolean as 'yes' or 'no'."""
    if not isinstance(x, bool):
        raise ValueError(f"format yesno needs true or false, got {x!r}")
    return "yes" if x else "no"


def _count(x: Any) -> str:
    """How many items a list or mapping holds."""
    if not isinstance(x, (list, dict)):
        raise ValueError(f"format n needs a list or a mapping to count, got {x!r}")
    return f"{len(x):,}"


def _epoch(x: Any) -> str:
    """An epoch, or 'none' where the record has none (a phase never reached)."""
    return "none" if x is None else f"{round(_number(x))}"


def _pair(x: Any) -> tuple[float, float]:
    """Two finite numbers from a [low, high] entry."""
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        raise ValueError(f"an interval format needs [low, high], got {x!r}")
    return _number(x[0]), _number(x[1])


def _number(x: Any) -> float:
    """A finite number, or ValueError."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"needs a finite number, got {x!r}")
    return float(x)


FORMATS: dict[str, Callable[[Any], str]] = {
    "pct": lambda x: _pct(_number(x)),            # 0.8853 -> 88.5%
    "pp": lambda x: _points(_number(x)),          # a difference of fractions -> +1.2 (points)
    "pm": _mean_sd,                               # {mean, sd} of fractions -> 88.5 ± 0.4%
    "pm_g3": lambda x: _mean_sd(x, lambda v: f"{v:.3g}", ""),  # {mean, sd} -> 0.6 ± 0.035
    "of": _share_true,                            # [true, true, false] -> 2 of 3
    "pct_bare": lambda x: f"{100 * _number(x):.1f}",  # 0.619 -> 61.9 (a % follows elsewhere)
    "ci": _interval,                              # [low, high] of fractions -> [87.6, 89.5]
    "ci_pp": _interval_points,                    # [low, high] of differences -> [-0.9, +0.1]
    "t95": lambda x: _interval(_t95(x)),          # values -> Student-t 95% of their mean
    "t95_pp": lambda x: _interval_points(_t95(x)),  # differences -> t interval in points
    "t95_g3": lambda x: "[{:+.3g}, {:+.3g}]".format(*_t95(x)),
    "t95_f3": lambda x: "[{:.3f}, {:.3f}]".format(*_t95(x)),  # of a level, not a change
    "mean_pct": lambda x: _pct(_mean(x)),         # values -> their mean as a percentage
    "mean_pp": lambda x: _points(_mean(x)),
    "mean_g3": lambda x: f"{_mean(x):.3g}",
    "mean_f2": lambda x: f"{_mean(x):.2f}",
    "range_pct": lambda x: _span(x, lambda v: f"{100 * v:.1f}", "%"),  # values -> 72.0-73.4%
    "range_pp": lambda x: _span(x, lambda v: f"{100 * v:.1f}"),
    "range_int": lambda x: _span(x, lambda v: f"{round(v)}"),         # epochs -> 195-210
    "ints": lambda x: ", ".join(f"{round(v)}" for v in _values(x)),    # 200, 200, 190
    "pct0": lambda x: f"{100 * _number(x):.0f}%",                      # 0.6 -> 60%
    "yesno": _yes_no,
    "epoch": _epoch,
    "n": _count,                                                       # a list -> its length
    "f2": lambda x: f"{_number(x):.2f}",
    "f3": lambda x: f"{_number(x):.3f}",
    "g3": lambda x: f"{_number(x):.3g}",
    "int": lambda x: f"{round(_number(x)):,}",
    "min": lambda x: f"{_number(x) / 60:.1f}",    # seconds -> minutes
    "raw": str,
}
TOKEN = re.compile(r"\{\{\s*([a-z_0-9]+):([^|}]+?)(?:\|([a-z_0-9]+))?\s*\}\}")
RENDERED = re.compile(r"<!--t ([a-z_0-9]+):([^|]+?)\|([a-z_0-9]+)-->(.*?)<!--/t-->", re.S)
# Documents whose every result-like number must be a token (tests/test_docs.py).
TOKENISED = ("README.md", "docs/results.md", "docs/experiments.md", "docs/protocol.md",
             "docs/gpu.md", "docs/reliability.md", "docs/cluster.md")


class TokenError(ValueError):
    """A token that names an unknown source, path or format."""


def _numbers(value: Any) -> list[float] | None:
    """A number or a list of numbers as a list of floats; None for anything else."""
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return [float(v) for v in values]


def _select(items: list[Any], spec: str) -> Any:
    """The one item of `items` whose `key` equals the numbers of `key=v1,v2`; None if not one."""
    key, _, wanted = spec.partition("=")
    try:
        target = [float(v) for v in wanted.split(",")]
    except ValueError:
        return None
    hits = [item for item in items
            if isinstance(item, dict) and key in item and _numbers(item[key]) == target]
    return hits[0] if len(hits) == 1 else None


def lookup(node: Any, dotted: str) -> Any:
    """The value at `dotted` in a JSON tree; keys may contain dots, integers index lists, `*`
    maps the rest of the path over a list's items, and `key=value` (numbers, comma-separated
    for a list) picks the one item whose `key` holds them, so a token names a cell by its
    setting rather than by a position that shifts when a cell is added."""
    parts = dotted.split(".")
    i = 0
    while i < len(parts):
        if isinstance(node, list) and parts[i] == "*":
            rest = ".".join(parts[i + 1:])
            return [lookup(item, rest) if rest else item for item in node]
        if isinstance(node, list) and "=" in parts[i]:
            # The longest run of parts that selects one item: a value may hold dots (0.0005).
            for j in range(len(parts), i, -1):
                item = _select(node, ".".join(parts[i:j]))
                if item is not None:
                    node, i = item, j
                    break
            else:
                raise KeyError(".".join(parts[:i + 1]))
            continue
        if isinstance(node, list):
            try:
                node, i = node[int(parts[i])], i + 1
            except (ValueError, IndexError):
                raise KeyError(".".join(parts[:i + 1])) from None
            continue
        if not isinstance(node, dict):
            raise KeyError(".".join(parts[:i + 1]))
        # The longest run of parts that is a key: seeds.json keys hold dots themselves.
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            raise KeyError(".".join(parts[:i + 1]))
    return node


def quotient_or_value(tree: Any, path: str) -> Any:
    """The value at `path`; for `a/b`, the value at `a` divided by the value at `b` (a ratio of
    two numbers of one file, such as a throughput against its baseline)."""
    if "/" not in path:
        return lookup(tree, path)
    numerator, denominator = (part.strip() for part in path.split("/", 1))
    bottom = _number(lookup(tree, denominator))
    if bottom == 0:
        raise ValueError(f"{denominator} is 0")
    return _number(lookup(tree, numerator)) / bottom


def resolve_token(source: str, path: str, fmt: str, root: Path = REPO,
                  cache: dict[str, Any] | None = None) -> str:
    """The formatted value of one token; TokenError naming what is wrong.

    `cache` holds the loaded sources; a name already in it (a notebook's own results) is read
    from there before SOURCES is consulted.
    """
    cache = {} if cache is None else cache
    if source not in cache and source not in SOURCES:
        raise TokenError(f"source: unknown {source!r}; allowed: "
                         f"{', '.join([*cache, *SOURCES])}")
    if fmt not in FORMATS:
        raise TokenError(f"format: unknown {fmt!r} in {{{{{source}:{path}|{fmt}}}}}; "
                         f"allowed: {', '.join(FORMATS)}")
    if source not in cache:
        cache[source] = load_json(Path(root) / SOURCES[source])
    try:
        value = quotient_or_value(cache[source], path.strip())
        return FORMATS[fmt](value)
    except (KeyError, ValueError, TypeError) as err:
        where = SOURCES.get(source, f"source {source!r}")
        raise TokenError(f"{{{{{source}:{path}|{fmt}}}}}: {where} gives no usable "
                         f"value ({err})") from None


def render(text: str, root: Path = REPO) -> str:
    """`text` with every bare and every rendered token (re)filled from the results files."""
    cache: dict[str, Any] = {}

    def fill(source: str, path: str, fmt: str | None) -> str:
        """One token, rendered with its value (pct when it names no format)."""
        fmt = fmt or "pct"
        value = resolve_token(source, path, fmt, root, cache)
        return f"<!--t {source}:{path.strip()}|{fmt}-->{value}<!--/t-->"

    text = RENDERED.sub(lambda m: fill(m.group(1), m.group(2), m.group(3)), text)
    return TOKEN.sub(lambda m: fill(m.group(1), m.group(2), m.group(3)), text)


def fill(text: str, root: Path = REPO, **sources: Any) -> str:
    """`text` with every token replaced by its bare value; each keyword names a source (a
    results mapping, or the path of a JSON file) read before SOURCES."""
    cache = {name: load_json(Path(value)) if isinstance(value, (str, Path)) else value
             for name, value in sources.items()}
    return TOKEN.sub(lambda m: resolve_token(m.group(1), m.group(2), m.group(3) or "pct",
                                             root, cache), text)


def render_file(path: Path, root: Path = REPO) -> bool:
    """Render a markdown file in place; whether it changed."""
    path = Path(path)
    old = path.read_text()
    new = render(old, root)
    if new != old:
        atomic_write(path, lambda p: p.write_text(new))
    return new != old


# A number that states a result: a decimal, or a percentage. Integers (epochs, seeds, widths,
# section numbers) are not results by themselves.
RESULT_NUMBER = re.compile(r"(?<![\w./-])[-−+]?\d[\d,]*\.\d+\s?%?|(?<![\w./-])\d+(?:\.\d+)?%")
# Stated in the paper or fixed by the protocol (hyper-parameters, the phase's threshold, the
# intervals' level, chance), not measured here.
ALLOWED = frozenset({"93%", "99.5%", "0.1", "0.01", "0.001", "5e-3", "5e-4", "5e-5", "0.9",
                     "0.3", "0.6", "0.5", "0.75", "2306.17105", "3.10", "95%",
                     "50%", "30%",
                     # Where a schedule acts, as a share of training: warm-up over the first 1%,
                     # lr drops at 30%/60% or 50%/75%, checkpoints every 5% (protocol, 3 and 7).
                     "1%", "5%", "60%", "75%",
                     # The standard ResNet-18's size (11.2M parameters), a fact of the model.
                     "11.2",
                     # Our speed target: the training loop at 0.95 of the bare step (protocol, 9).
                     "0.95"})


def untokenised_numbers(text: str) -> list[str]:
    """Result-like numbers of a markdown text outside tokens, code, links, versions, ALLOWED
    and two kinds of marked region.

    The regions are the README's results table (built from the same files by nbutils.results)
    and a cost guide, `<!-- cost-guide:start -->` ... `<!-- cost-guide:end -->`: approximate
    timings for planning, each from a one-off run whose script, command or log file the region
    names (a number of a committed results file in it is still a token). A version after a
    package's name ("torch 2.11", "Python 3.10+") is not a result.
    """
    text = RENDERED.sub("", text)
    text = re.sub(r"<!-- (results|cost-guide):start -->.*?<!-- \1:end -->", "", text,
                  flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"\b(?:Python|torch|torchvision|CUDA)\s+\d+(?:\.\d+)+\+?", "", text)
    return [m.strip() for m in RESULT_NUMBER.findall(text) if m.strip() not in ALLOWED]
