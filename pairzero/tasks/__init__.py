"""Tasks for ZO fine-tuning: data (built-in or Hugging Face ``datasets``), federated
partitioning, seeded mini-batches, and the prompt-based loss (:mod:`pairzero.tasks.objective`).

Labels index the verbalizer of :class:`pairzero.config.TaskConfig` (``0`` -> " terrible",
``1`` -> " great" by default).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairzero.config import TaskConfig

__all__ = [
    "Example",
    "TaskData",
    "TaskUnavailableError",
    "load_task",
    "partition",
    "sample_batch",
    "Objective",
    "make_objective",
    "BUILTIN_SENTIMENT_PATH",
]

log = logging.getLogger(__name__)

BUILTIN_SENTIMENT_PATH = Path(__file__).resolve().parent / "data" / "builtin_sentiment.jsonl"
PARTITION_MODES = ("iid", "dirichlet")
# Redraws of the Dirichlet proportions before empty shards are filled by moving examples.
_DIRICHLET_REDRAWS = 100
_TEXT_COLUMNS = ("sentence", "text", "content", "review")


class TaskUnavailableError(RuntimeError):
    """A task's data cannot be obtained (missing package, unreachable hub, unknown format)."""


@dataclass(frozen=True)
class Example:
    """One labelled example; ``label`` indexes the verbalizer (or is ignored for ``kind='lm'``)."""

    text: str
    label: int


@dataclass(frozen=True)
class TaskData:
    """Train and validation examples, in a fixed order."""

    train: tuple[Example, ...]
    validation: tuple[Example, ...]


def _load_builtin_sentiment(path: Path = BUILTIN_SENTIMENT_PATH) -> TaskData:
    splits: dict[str, list[Example]] = {"train": [], "validation": []}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            row = json.loads(line)
            if row.get("split") not in splits:
                raise ValueError(f"{path}:{line_no}: split {row.get('split')!r} is not train/validation")
            splits[row["split"]].append(Example(text=str(row["text"]), label=int(row["label"])))
    return TaskData(train=tuple(splits["train"]), validation=tuple(splits["validation"]))


def _load_hf(spec: str, seed: int) -> TaskData:
    """``<dataset>[/<config>]`` through ``datasets.load_dataset`` (imported lazily)."""
    try:
        import datasets  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise TaskUnavailableError(
            f"task.name 'hf:{spec}' needs the Hugging Face 'datasets' package, which is not "
            "installed: run `pip install datasets` (or `pip install pairzero[hf]`)"
        ) from None
    path, _, config = spec.partition("/")
    if not path:
        raise ValueError(f"task.name: 'hf:{spec}' must be 'hf:<dataset>[/<config>]'")
    try:
        ds = datasets.load_dataset(path, config or None)
    except (ConnectionError, OSError) as exc:
        raise TaskUnavailableError(
            f"task.name 'hf:{spec}': the Hugging Face hub cannot be reached and the dataset is "
            f"not in the local cache ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Download it on a machine with network access (it is cached under HF_HOME) or use "
            "task.name 'builtin-sentiment'."
        ) from None

    def convert(split: object) -> tuple[Example, ...]:
        columns = list(split.column_names)  # type: ignore[attr-defined]
        text_col = next((c for c in _TEXT_COLUMNS if c in columns), None)
        if text_col is None or "label" not in columns:
            raise TaskUnavailableError(
                f"task.name 'hf:{spec}': need a text column ({', '.join(_TEXT_COLUMNS)}) and "
                f"'label'; the dataset has {columns}"
            )
        return tuple(
            Example(text=str(t).strip(), label=int(lab))
            for t, lab in zip(split[text_col], split["label"], strict=True)  # type: ignore[index]
        )

    train = convert(ds["train"])
    if "validation" in ds:
        validation = convert(ds["validation"])
    elif "test" in ds and min(e.label for e in convert(ds["test"])) >= 0:
        validation = convert(ds["test"])
    else:
        # No labelled held-out split: hold out 10 % of train, seeded.
        order = np.random.default_rng(seed).permutation(len(train))
        cut = max(1, len(train) // 10)
        validation = tuple(train[i] for i in order[:cut])
        train = tuple(train[i] for i in order[cut:])
    return TaskData(train=train, validation=validation)


def load_task(cfg: TaskConfig, seed: int = 0) -> TaskData:
    """Train/validation examples of ``cfg.name``.

    * ``builtin-sentiment``: the shipped generated dataset (600 train / 200 validation, balanced);
    * ``hf:<dataset>[/<config>]`` (e.g. ``hf:glue/sst2``): ``datasets.load_dataset``.

    The validation set is cut to ``cfg.eval_examples`` examples (a seeded subsample when it is
    larger), so every node and the AP evaluate on the same examples.
    """
    if cfg.name == "builtin-sentiment":
        data = _load_builtin_sentiment()
    elif cfg.name.startswith("hf:"):
        data = _load_hf(cfg.name[3:], seed)
    else:
        raise ValueError(
            f"task.name: {cfg.name!r} is not 'builtin-sentiment' or 'hf:<dataset>[/<config>]'"
        )
    if cfg.kind == "classification":
        n_labels = len(cfg.verbalizer)
        bad = [e.label for e in data.train + data.validation if not 0 <= e.label < n_labels]
        if bad:
            raise ValueError(
                f"task.verbalizer: {len(cfg.verbalizer)} words but the task has label {bad[0]}"
            )
    if len(data.validation) > cfg.eval_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(data.validation), cfg.eval_examples, replace=False))
        data = TaskData(train=data.train, validation=tuple(data.validation[i] for i in keep))
    log.info("task %s: %d train, %d validation examples", cfg.name, len(data.train), len(data.validation))
    return data


def _split_sizes_nonempty(shards: list[list[int]]) -> None:
    """Move one example from the largest shard to each empty one (in place, deterministic)."""
    for shard in shards:
        if not shard:
            donor = max(shards, key=len)
            shard.append(donor.pop())


def partition(
    examples: Sequence[Example], k: int, mode: str, alpha: float, seed: int
) -> list[tuple[Example, ...]]:
    """Split ``examples`` over ``k`` nodes; disjoint, complete, every shard non-empty.

    ``iid``: a seeded shuffle cut into ``k`` near-equal shards. ``dirichlet``: label skew as in
    federated-learning benchmarks: for every label, the node shares of its examples are drawn
    from Dirichlet(alpha * 1_k) (small ``alpha`` -> each node sees mostly one label).
    Example order inside a shard follows the input order.
    """
    if k < 1:
        raise ValueError(f"k: {k!r} must be >= 1")
    if len(examples) < k:
        raise ValueError(f"k: {k} nodes need at least {k} examples, got {len(examples)}")
    if mode not in PARTITION_MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(PARTITION_MODES)}")
    rng = np.random.default_rng(seed)
    n = len(examples)
    if mode == "iid":
        shards = [sorted(s.tolist()) for s in np.array_split(rng.permutation(n), k)]
    else:
        if not alpha > 0:
            raise ValueError(f"alpha: {alpha!r} must be > 0 for dirichlet partitioning")
        labels = np.array([e.label for e in examples])
        for _ in range(_DIRICHLET_REDRAWS):
            shards = [[] for _ in range(k)]
            for label in np.unique(labels):
                idx = rng.permutation(np.flatnonzero(labels == label))
                shares = rng.dirichlet(np.full(k, alpha))
                # Cut points from the cumulative shares; rounding keeps the split complete.
                cuts = np.round(np.cumsum(shares)[:-1] * len(idx)).astype(int)
                for node, part in enumerate(np.split(idx, cuts)):
                    shards[node].extend(part.tolist())
            if all(shards):
                break
        _split_sizes_nonempty(shards)
        shards = [sorted(s) for s in shards]
    return [tuple(examples[i] for i in s) for s in shards]


def sample_batch(shard: Sequence[Example], batch_size: int, seed: int) -> list[Example]:
    """``batch_size`` examples drawn without replacement, a pure function of ``seed``.

    When the shard is smaller than ``batch_size`` the whole shard is returned (shuffled).
    The ZO engine passes ``round_seed ^ node_id`` so nodes draw independent batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} must be >= 1")
    if not shard:
        raise ValueError("shard: is empty; partition() never produces empty shards")
    if seed < 0:
        raise ValueError(f"seed: {seed!r} must be >= 0")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(shard), size=min(batch_size, len(shard)), replace=False)
    return [shard[i] for i in idx]


from pairzero.tasks.objective import Objective, make_objective  # noqa: E402  (needs Example)
