"""Tasks for ZO fine-tuning: data (built-in or Hugging Face ``datasets``), federated
partitioning, seeded mini-batches (:mod:`pairzero.tasks.data`), and the prompt-based loss
(:mod:`pairzero.tasks.objective`); the generators of the built-in sets
(:mod:`pairzero.tasks.builtin`, :mod:`pairzero.tasks.topic`, :mod:`pairzero.tasks.lexicon`).

Labels index the verbalizer of :class:`pairzero.config.TaskConfig`; every task has its own
prompt (:func:`with_task_prompt`).
"""

from pairzero.tasks.data import (
    BUILTIN_SENTIMENT_PATH,
    BUILTIN_TASKS,
    BuiltinTask,
    Example,
    TaskData,
    TaskUnavailableError,
    load_task,
    partition,
    sample_batch,
    with_task_prompt,
)
from pairzero.tasks.objective import Objective, make_objective

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
    "BUILTIN_TASKS",
    "BuiltinTask",
    "with_task_prompt",
]
