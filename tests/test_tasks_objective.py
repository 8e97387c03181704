"""The MeZO objective equals a reference from full logits, for left and right padding."""

from __future__ import annotations

import pytest
import torch

from pairzero.config import ModelConfig, TaskConfig
from pairzero.models import load_model
from pairzero.tasks import Example, make_objective

BATCH = [
    Example("The soup was awful.", 0),
    Example("Honestly, my sister loved the film too, and the ending was a long one.", 1),
    Example("I hated it.", 0),
]


@pytest.fixture(scope="module")
def model_tok():
    return load_model(ModelConfig(name="opt-tiny"))


def _reference(model, tok, cfg: TaskConfig) -> torch.Tensor:
    # One example at a time, no padding, full (1, S, V) logits: log_softmax over candidates.
    cand = [tok(w, add_special_tokens=False)["input_ids"][0] for w in cfg.verbalizer]
    losses = []
    for ex in BATCH:
        x = tok(cfg.template.format(sentence=ex.text), return_tensors="pt")
        logits = model(**x).logits[0, -1]  # (V,)
        losses.append(-torch.log_softmax(logits[cand], dim=0)[ex.label])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("side", ["left", "right"])
def test_classification_loss_matches_full_logits(model_tok, side: str) -> None:
    model, tok = model_tok
    cfg = TaskConfig()
    tok.padding_side = side
    obj = make_objective(cfg, tok)
    with torch.inference_mode():
        enc = obj.encode(BATCH)
        got = obj.loss(model, enc)
        ref = _reference(model, tok, cfg)
    assert (enc["attention_mask"] == 0).any()  # the batch really is padded
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_lm_loss_matches_full_logits(model_tok) -> None:
    model, tok = model_tok
    tok.padding_side = "right"
    obj = make_objective(TaskConfig(kind="lm"), tok)
    with torch.inference_mode():
        enc = obj.encode(BATCH)
        got = obj.loss(model, enc)
        nll, n = 0.0, 0
        for ex in BATCH:
            x = tok(ex.text, return_tensors="pt")["input_ids"]
            logp = model(input_ids=x).logits[0, :-1].log_softmax(-1)
            nll += float(-logp.gather(1, x[0, 1:, None]).sum())
            n += x.shape[1] - 1
    assert abs(float(got) - nll / n) < 1e-4


def test_evaluate_and_truncation_keep_prompt_end(model_tok) -> None:
    model, tok = model_tok
    obj = make_objective(TaskConfig(max_length=6), tok)
    enc = obj.encode([Example("word " * 40, 1)])
    assert enc["input_ids"].shape[1] == 6
    assert tok.decode(enc["input_ids"][0, -2:]).strip() == "It was"
    out = obj.evaluate(model, BATCH, batch_size=2)
    assert set(out) == {"loss", "accuracy"} and 0.0 <= out["accuracy"] <= 1.0
