"""builtin-topic: reproducible, balanced, uncontaminated, one answer per sentence, a fair
zero-shot start for opt-tiny; per-task prompt defaults."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pairzero.config import ModelConfig, TaskConfig
from pairzero.models import OPT_TINY_DIR, load_model
from pairzero.tasks import BUILTIN_TASKS, load_task, make_objective, with_task_prompt
from pairzero.tasks.topic import DATA_PATH, TOPICS, generate_topic_examples, topic_of


def test_topic_file_is_reproducible_balanced_disjoint_and_unambiguous() -> None:
    # Prepare
    shipped = [json.loads(line) for line in DATA_PATH.read_text().splitlines()]
    corpus = (OPT_TINY_DIR.parent / "opt_tiny_corpus.txt").read_text()
    # Execute
    rows = generate_topic_examples()
    data = load_task(TaskConfig(name="builtin-topic", eval_examples=400))
    # Assert
    assert rows == shipped
    assert (len(data.train), len(data.validation)) == (1600, 400)
    assert Counter(e.label for e in data.train) == {i: 200 for i in range(8)}
    assert Counter(e.label for e in data.validation) == {i: 50 for i in range(8)}
    texts = [e.text for e in data.train + data.validation]
    assert len(set(texts)) == len(texts)
    assert not any(t in corpus for t in texts)  # never seen in pre-training
    assert all(topic_of(e.text) == {TOPICS[e.label]} for e in data.train + data.validation)


def test_each_topic_word_is_one_token_and_the_prompt_is_the_tasks_own() -> None:
    _, tok = load_model(ModelConfig(name="opt-tiny"))
    task = BUILTIN_TASKS["builtin-topic"]
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) == 1 for w in task.verbalizer)
    assert task.verbalizer == tuple(" " + t for t in TOPICS)
    # Left at the generic defaults, the config gets the task's prompt; set values are kept.
    cfg = with_task_prompt(TaskConfig(name="builtin-topic"))
    assert (cfg.template, cfg.verbalizer) == (task.template, task.verbalizer)
    mine = TaskConfig(name="builtin-topic", template="{sentence} Topic:")
    assert with_task_prompt(mine).template == "{sentence} Topic:"
    assert with_task_prompt(TaskConfig()) == TaskConfig()  # builtin-sentiment: MeZO's prompt
    assert with_task_prompt(TaskConfig(name="hf:/x")) == TaskConfig(name="hf:/x")
    assert make_objective(TaskConfig(name="builtin-topic"), tok).cfg.verbalizer == task.verbalizer


def test_fair_zero_shot_start() -> None:
    # The pre-trained model reads the topic off well above chance (1/8) but far from 1:
    # 400 examples give a binomial sd of 1.7 points at chance, so 0.20 is > 4 sd above it.
    model, tok = load_model(ModelConfig(name="opt-tiny"))
    cfg = TaskConfig(name="builtin-topic", eval_examples=400)
    zero_shot = make_objective(cfg, tok).evaluate(model, load_task(cfg).validation)
    assert 0.20 <= zero_shot["accuracy"] <= 0.60


def test_wrong_verbalizer_size_is_refused() -> None:
    with pytest.raises(ValueError, match="task.verbalizer"):
        load_task(TaskConfig(name="builtin-topic", verbalizer=(" film", " book")))
