"""The shipped opt-tiny is what its pretrain_report.json says, and (slow) federated ZO
fine-tuning through the real engine (simulation.run.run_simulation) lifts builtin-sentiment
validation accuracy by >= 10 points within 200 rounds (a few minutes on 2 cores)."""

from __future__ import annotations

import json

import pytest
import torch

from pairzero.config import ModelConfig, TaskConfig, load_config
from pairzero.models import OPT_TINY_DIR, load_model
from pairzero.tasks import load_task, make_objective
from pairzero.tasks.lexicon import NEGATIVE_ADJECTIVES, POSITIVE_ADJECTIVES
from simulation.run import run_simulation

# Settings found to learn (see the report of the corpus redesign); 3 nodes, zo_noiseless.
ZO_SETTINGS = [
    "run.method=zo_noiseless",
    "nodes.count=3",
    "model.name=opt-tiny",
    "model.trainable=bias_layernorm",
    "zo.lr=1e-2",
    "zo.epsilon=1e-3",
    "zo.clip=50",
    "zo.perturbation=gaussian",
    "run.rounds=200",
    "task.eval_every=100",
]


def _polarity_probe(model: torch.nn.Module, tok, examples) -> float:
    """Accuracy of P(positive adjectives) > P(negative adjectives) after the task prompt."""
    cfg = TaskConfig()
    enc = make_objective(cfg, tok).encode(examples)

    def first_ids(words: tuple[str, ...]) -> list[int]:
        return sorted({tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in words})

    with torch.inference_mode():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    last = enc["attention_mask"].sum(dim=1) - 1
    probs = logits[torch.arange(len(examples)), last].softmax(dim=-1)
    pos = probs[:, first_ids(POSITIVE_ADJECTIVES)].sum(dim=1)
    neg = probs[:, first_ids(NEGATIVE_ADJECTIVES)].sum(dim=1)
    return float(((pos > neg).long() == enc["labels"]).float().mean())


def test_shipped_checkpoint_matches_pretrain_report() -> None:
    # Prepare
    report = json.loads((OPT_TINY_DIR / "pretrain_report.json").read_text())
    model, tok = load_model(ModelConfig(name="opt-tiny"))
    cfg = TaskConfig()
    data = load_task(cfg)
    # Execute
    zero_shot = make_objective(cfg, tok).evaluate(model, data.validation)
    probe = _polarity_probe(model, tok, data.validation)
    # Assert: deterministic figures as recorded; the LM carries sentiment to the prompt end
    # (probe) while the verbalizer mapping is left for fine-tuning (zero-shot well below it).
    assert zero_shot["accuracy"] == pytest.approx(report["zero_shot_builtin_sentiment"]["accuracy"], abs=1e-9)
    assert zero_shot["loss"] == pytest.approx(report["zero_shot_builtin_sentiment"]["loss"], abs=1e-3)
    assert probe == pytest.approx(report["polarity_probe_validation"], abs=1e-9)
    assert probe >= 0.8
    assert zero_shot["accuracy"] <= probe - 0.1


# Seed 0 runs by default (about 10 s); more seeds with `-m slow`.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_zo_noiseless_improves_accuracy_by_10_points(tmp_path, seed: int) -> None:
    # 200 validation examples: binomial sd of an accuracy near 0.5 is 3.5 points, so +10
    # points is ~3 sd above what an unchanged model would show by chance.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = load_config(None, [*ZO_SETTINGS, f"run.seed={seed}"])
        summary = run_simulation(cfg, tmp_path, echo=False)
    finally:
        torch.set_num_threads(threads)
    start, end = summary["start_val_accuracy"], summary["final_val_accuracy"]
    assert end - start >= 0.10, (start, end)
