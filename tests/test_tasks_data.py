"""Built-in task file, partition, sample_batch, load_task errors."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from pairzero.config import TaskConfig
from pairzero.models import OPT_TINY_DIR
from pairzero.models.corpus import generate_corpus
from pairzero.tasks import Example, TaskUnavailableError, load_task, partition, sample_batch
from pairzero.tasks.builtin import DATA_PATH, generate_sentiment_examples


def test_builtin_file_is_reproducible_balanced_and_disjoint() -> None:
    rows = generate_sentiment_examples()
    import json
    shipped = [json.loads(line) for line in DATA_PATH.read_text().splitlines()]
    assert rows == shipped
    data = load_task(TaskConfig(name="builtin-sentiment"))
    assert (len(data.train), len(data.validation)) == (600, 200)
    assert Counter(e.label for e in data.train) == {0: 300, 1: 300}
    texts = [e.text for e in data.train + data.validation]
    assert len(set(texts)) == len(texts)
    # the shipped pre-training corpus never contains a task sentence; unfiltered it would
    shipped_corpus = (OPT_TINY_DIR.parent / "opt_tiny_corpus.txt").read_text()
    assert not any(t in shipped_corpus for t in texts)
    assert generate_corpus(50, exclude=texts[:1]) == generate_corpus(50, exclude=texts[:1])


def test_hf_task_without_datasets_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: import fails
    with pytest.raises(TaskUnavailableError, match="pip install datasets"):
        load_task(TaskConfig(name="hf:glue/sst2"))
    with pytest.raises(ValueError, match="task.name"):
        load_task(TaskConfig(name="nonsense"))


EX = tuple(Example(text=f"s{i}", label=i % 2) for i in range(200))


@pytest.mark.parametrize("mode", ["iid", "dirichlet"])
def test_partition_disjoint_complete_nonempty(mode: str) -> None:
    shards = partition(EX, 7, mode, 0.1, seed=5)
    flat = [e for s in shards for e in s]
    assert len(shards) == 7 and all(shards)
    assert sorted(e.text for e in flat) == sorted(e.text for e in EX)
    assert partition(EX, 7, mode, 0.1, seed=5) == shards


def test_dirichlet_skews_labels_iid_does_not() -> None:
    # With alpha=0.1 and 2 labels, a node's positive share is ~Beta-like near 0 or 1; with
    # iid shards of 40 examples it is 0.5 +- 0.08 (binomial sd sqrt(.25/40)). Mean |share-0.5|
    # over 5 nodes: iid < 0.2 (> 3 sd away is ~never), dirichlet > 0.25 for this seed and
    # for almost all seeds (E|share-0.5| ~ 0.4 at alpha 0.1).
    def skew(shards):
        return np.mean([abs(np.mean([e.label for e in s]) - 0.5) for s in shards])
    assert skew(partition(EX, 5, "iid", 0.1, seed=1)) < 0.2
    assert skew(partition(EX, 5, "dirichlet", 0.1, seed=1)) > 0.25


def test_sample_batch_deterministic() -> None:
    a = sample_batch(EX, 16, seed=42 ^ 3)
    assert a == sample_batch(EX, 16, seed=42 ^ 3)
    assert a != sample_batch(EX, 16, seed=42 ^ 4)
    assert len(set(a)) == 16
    assert sorted(sample_batch(EX[:5], 16, 0), key=lambda e: e.text) == list(EX[:5])
