"""The MeZO objective equals a reference from full logits, for left and right padding."""

from __future__ import annotations

from dataclasses import replace

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


@pytest.mark.parametrize("kind", ["classification", "lm"])
def test_micro_batched_loss_is_the_whole_batch_loss_within_64_ulps(model_tok, kind: str) -> None:
    # Prepare: 7 examples of different lengths (padding), left padding.
    model, tok = model_tok
    tok.padding_side = "left"
    examples = [Example(" ".join([ex.text] * (1 + i % 3)), ex.label) for i, ex in enumerate(BATCH * 3)][:7]
    base = TaskConfig(kind=kind, max_length=48, batch_size=7)
    enc = make_objective(base, tok).encode(examples)
    # Execute: micro-batches of 1, 3 (uneven: 3+3+1) and 7 examples, and the whole batch.
    with torch.inference_mode():
        whole = make_objective(base, tok).loss(model, enc)
        micro = {m: make_objective(replace(base, micro_batch_size=m), tok).loss(model, enc) for m in (1, 3, 7)}
    # Assert: one micro-batch of the whole batch is the same computation: bit for bit.  Smaller
    # ones differ only in how the matrix products round a row inside a smaller batch (every
    # row keeps the batch's padded width; the mean over the batch is reduced once): within
    # 64 fp32 ulps of the loss (measured here: at most 2 ulps, micro-batches of 1).
    assert torch.equal(micro[7], whole)
    tol = 64 * torch.finfo(torch.float32).eps * abs(float(whole))
    for m, loss in micro.items():
        assert abs(float(loss) - float(whole)) <= tol, (m, float(loss), float(whole))


def test_one_pass_classification_loss_is_cross_entropys_own_mean_bit_for_bit(model_tok) -> None:
    # Pins: micro-batching must not move the default path's last bits (a mean of the
    # reduction='none' terms does, and that moved every stored learning curve in docs/results).
    model, tok = model_tok
    tok.padding_side = "left"
    # 16 examples: a size where the two reductions differ in the last bit on opt-tiny
    examples = [Example(" ".join([ex.text] * (1 + i % 3)), ex.label) for i, ex in enumerate(BATCH * 6)][:16]
    cfg = TaskConfig(max_length=48, batch_size=len(examples))
    obj = make_objective(cfg, tok)
    enc = obj.encode(examples)
    with torch.inference_mode():
        logits = obj.candidate_logits(model, enc)
        want = torch.nn.functional.cross_entropy(logits, enc["labels"])
        for m in (0, len(examples)):
            assert torch.equal(make_objective(replace(cfg, micro_batch_size=m), tok).loss(model, enc), want)
