"""Task data for ZO fine-tuning: built-in or Hugging Face ``datasets`` examples, federated
partitioning and seeded mini-batches (the prompt-based loss: :mod:`pairzero.tasks.objective`).

Labels index the verbalizer of :class:`pairzero.config.TaskConfig`. Every task has its own
prompt: a config that leaves ``task.template`` and ``task.verbalizer`` at their generic
defaults (MeZO's SST-2 prompt ``"{sentence} It was"`` / ``" terrible"``, ``" great"``) gets
the prompt of its task (:func:`with_task_prompt`): ``builtin-topic`` is scored after
``"{sentence} This is about a"`` on its eight topic nouns; ``builtin-sentiment`` and ``hf:``
sentiment sets keep MeZO's. A template or verbalizer set in the config always wins.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pairzero.config import TaskConfig
from pairzero.log import quiet_third_party

__all__ = [
    "Example",
    "TaskData",
    "TaskUnavailableError",
    "load_task",
    "partition",
    "sample_batch",
    "BUILTIN_SENTIMENT_PATH",
    "BUILTIN_TASKS",
    "BuiltinTask",
    "with_task_prompt",
]

log = logging.getLogger(__name__)

BUILTIN_SENTIMENT_PATH = Path(__file__).resolve().parent / "data" / "builtin_sentiment.jsonl"
BUILTIN_TOPIC_PATH = Path(__file__).resolve().parent / "data" / "builtin_topic.jsonl"


@dataclass(frozen=True)
class BuiltinTask:
    """A task shipped with the package: its data file and its own prompt."""

    path: Path
    template: str
    verbalizer: tuple[str, ...]
    summary: str


# The generic prompt (TaskConfig's defaults): MeZO's SST-2 template and verbalizer.
_GENERIC_TEMPLATE = TaskConfig().template
_GENERIC_VERBALIZER = TaskConfig().verbalizer

#: Built-in tasks by ``task.name`` (see pairzero.tasks.builtin and pairzero.tasks.topic).
BUILTIN_TASKS: dict[str, BuiltinTask] = {
    "builtin-sentiment": BuiltinTask(
        BUILTIN_SENTIMENT_PATH, _GENERIC_TEMPLATE, _GENERIC_VERBALIZER,
        "binary review sentiment, 600 train / 200 validation; the quick demo",
    ),
    "builtin-topic": BuiltinTask(
        BUILTIN_TOPIC_PATH, "{sentence} This is about a",
        (" book", " concert", " film", " game", " hotel", " laptop", " phone", " restaurant"),
        "8-way review topic, 1600 train / 400 validation; separates the methods",
    ),
}
PARTITION_MODES = ("iid", "dirichlet")
# Redraws of the Dirichlet proportions before empty shards are filled by moving examples.
_DIRICHLET_REDRAWS = 100
# Columns of hf: tasks: the first text column present (GLUE/SST-2 "sentence", IMDB and most
# others "text") and the label (class ids; GLUE test splits hold -1, i.e. unlabelled).
_TEXT_COLUMNS = ("sentence", "text", "content", "review")
_LABEL_COLUMN = "label"


class TaskUnavailableError(RuntimeError, ValueError):
    """A task's data cannot be obtained (missing package, unreachable hub, unknown format).

    Also a ``ValueError`` (like ``io.UnsupportedOperation`` is also one): task.name names data
    this machine cannot serve, so the CLI reports it in one line with exit status 2.
    """


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


def with_task_prompt(cfg: TaskConfig) -> TaskConfig:
    """``cfg`` with the task's own template and verbalizer where it leaves the generic defaults.

    Only built-in tasks have a prompt of their own; for ``hf:`` tasks (sentiment sets such as
    SST-2) the generic MeZO prompt is the task's prompt. Values set in the config are kept.
    """
    task = BUILTIN_TASKS.get(cfg.name)
    if task is None or cfg.kind != "classification":
        return cfg
    changes: dict[str, Any] = {}
    if cfg.template == _GENERIC_TEMPLATE and task.template != cfg.template:
        changes["template"] = task.template
    if tuple(cfg.verbalizer) == _GENERIC_VERBALIZER and task.verbalizer != tuple(cfg.verbalizer):
        changes["verbalizer"] = task.verbalizer
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _load_builtin(path: Path = BUILTIN_SENTIMENT_PATH) -> TaskData:
    splits: dict[str, list[Example]] = {"train": [], "validation": []}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            row = json.loads(line)
            if row.get("split") not in splits:
                raise ValueError(f"{path}:{line_no}: split {row.get('split')!r} is not train/validation")
            splits[row["split"]].append(Example(text=str(row["text"]), label=int(row["label"])))
    return TaskData(train=tuple(splits["train"]), validation=tuple(splits["validation"]))


def _parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """``(path, config)`` for ``datasets.load_dataset`` from the part of task.name after ``hf:``.

    A local path (absolute, or starting with ``./``, ``../`` or ``~``) is taken whole; a hub id
    with ``:`` is ``<repo>:<config>`` (``nyu-mll/glue:sst2``; an empty config after ``:`` means
    none, for namespaced repos without configs: ``stanfordnlp/sst2:``); otherwise it is
    ``<dataset>[/<config>]`` (``glue/sst2``).
    """
    if spec.startswith(("/", "./", "../", "~")):
        # Absolute, so that a relative path that does not exist is not looked up on the hub.
        return str(Path(spec).expanduser().absolute()), None
    if ":" in spec:
        path, _, config = spec.rpartition(":")
        if not path or path.count("/") > 1:
            raise ValueError(f"task.name: 'hf:{spec}' must be 'hf:<owner>/<dataset>:<config>'")
    else:
        path, _, config = spec.partition("/")
        if not path or "/" in config:
            raise ValueError(
                f"task.name: 'hf:{spec}' must be 'hf:<dataset>[/<config>]', "
                "'hf:<owner>/<dataset>:[<config>]' or 'hf:/path/to/local/dir'"
            )
    return path, config or None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _load_hf(spec: str, seed: int) -> TaskData:
    """``hf:`` tasks through ``datasets.load_dataset`` (imported lazily, the ``hf`` extra).

    Needs a ``train`` split with a text column (the first of ``_TEXT_COLUMNS`` present) and an
    integer ``label`` column. Validation is the ``validation`` split, else a fully labelled
    ``test`` split (GLUE's test labels are -1), else a seeded 10 % hold-out of train.
    """
    try:
        import datasets  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise TaskUnavailableError(
            f"task.name 'hf:{spec}' needs the Hugging Face 'datasets' package, which is not "
            "installed: run `pip install datasets` (or `pip install pairzero[hf]`)"
        ) from None
    path, config = _parse_hf_spec(spec)
    quiet_third_party()
    try:
        ds = datasets.load_dataset(path, config)
    except ConnectionError as exc:
        # datasets 5.x raises the builtin ConnectionError ("Couldn't reach 'glue' on the Hub
        # (LocalEntryNotFoundError)") when the endpoint refuses or cannot be resolved (after
        # huggingface_hub's ~23 s of retries) and at once under HF_HUB_OFFLINE=1, in both
        # cases only when the dataset is not in the local cache.
        raise TaskUnavailableError(
            f"task.name 'hf:{spec}': the Hugging Face hub cannot be reached and the dataset is "
            f"not in the local cache ({_first_line(exc)}). Download it once on a machine with "
            "hub access (it is cached under HF_HOME; set HF_HUB_OFFLINE=1 to use the cache "
            "without waiting for the hub), point task.name at a local directory "
            "('hf:/path/to/dir' with train.jsonl, validation.jsonl), or use 'builtin-sentiment'."
        ) from None
    except FileNotFoundError as exc:
        # A local path that does not exist, or a dataset the hub does not have
        # (datasets.exceptions.DatasetNotFoundError, DataFilesNotFoundError, EmptyDatasetError).
        raise TaskUnavailableError(f"task.name 'hf:{spec}': no such dataset ({_first_line(exc)})") from None
    if "train" not in ds:
        raise TaskUnavailableError(
            f"task.name 'hf:{spec}': needs a 'train' split; the dataset has {list(ds)}"
        )

    def convert(split_name: str) -> tuple[Example, ...]:
        split = ds[split_name]
        columns = list(split.column_names)
        text_col = next((c for c in _TEXT_COLUMNS if c in columns), None)
        if text_col is None or _LABEL_COLUMN not in columns:
            raise TaskUnavailableError(
                f"task.name 'hf:{spec}': need a text column (one of {', '.join(_TEXT_COLUMNS)}) "
                f"and '{_LABEL_COLUMN}'; split '{split_name}' has columns {columns}"
            )
        labels = list(split[_LABEL_COLUMN])
        bad = [v for v in labels if not isinstance(v, int)]
        if bad:
            raise TaskUnavailableError(
                f"task.name 'hf:{spec}': column '{_LABEL_COLUMN}' must hold integer class ids "
                f"(verbalizer indices); split '{split_name}' has {bad[0]!r}"
            )
        return tuple(
            Example(text=str(t).strip(), label=lab)
            for t, lab in zip(split[text_col], labels, strict=True)
        )

    train = convert("train")
    test: tuple[Example, ...] = ()
    if "validation" not in ds and "test" in ds and _LABEL_COLUMN in ds["test"].column_names:
        test = convert("test")
    if "validation" in ds:
        validation = convert("validation")
    elif test and all(e.label >= 0 for e in test):
        validation = test
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
    * ``builtin-topic``: the shipped 8-way topic dataset (1600 train / 400 validation, balanced);
    * ``hf:<spec>``: ``datasets.load_dataset`` (the ``hf`` extra), where ``<spec>`` is
      - ``<dataset>[/<config>]``, a hub dataset: ``hf:glue/sst2``, ``hf:imdb``;
      - ``<owner>/<dataset>:[<config>]``, a namespaced hub dataset: ``hf:nyu-mll/glue:sst2``,
        ``hf:stanfordnlp/sst2:`` (nothing after ``:``: no config);
      - a local directory, absolute or starting with ``./``, ``../`` or ``~``:
        ``hf:/data/sst2`` holding ``train.jsonl`` and ``validation.jsonl`` (or ``test``; csv,
        parquet... as datasets' packaged builders read them), one ``{"text": ..., "label": 0}``
        object per line. Needs no hub access.

      A hub dataset needs the hub or the local cache (HF_HOME); when neither has it, this
      raises :class:`TaskUnavailableError`. Text: the first of the columns ``sentence``,
      ``text``, ``content``, ``review``; labels: the integer column ``label``.

    The validation set is cut to ``cfg.eval_examples`` examples (a seeded subsample when it is
    larger), so every node and the AP evaluate on the same examples.
    """
    cfg = with_task_prompt(cfg)
    if cfg.name in BUILTIN_TASKS:
        data = _load_builtin(BUILTIN_TASKS[cfg.name].path)
    elif cfg.name.startswith("hf:"):
        data = _load_hf(cfg.name[3:], seed)
    else:
        raise ValueError(
            f"task.name: {cfg.name!r} is not one of {', '.join(repr(n) for n in BUILTIN_TASKS)} "
            "or 'hf:<dataset>[/<config>]'"
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
