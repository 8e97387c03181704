"""Losses for ZO fine-tuning, computed with forward passes only.

Classification (MeZO): the prompt ``template.format(sentence=text)`` ("<sentence> It was") is
scored by the log-probabilities of the verbalizer words (" terrible", " great") at its last
token; the loss is the cross-entropy of the label over those candidates only. Vocabulary
logits are computed ONLY for the candidate words at the last prompt position: the decoder's
hidden state there (B, H) times the candidate rows of the output embedding (C, H), never the
full (B, S, V) logits tensor (V = 50272 for OPT: 16 x 64 x 50272 fp32 = 206 MB).

LM (``kind='lm'``): mean next-token cross-entropy over the non-pad tokens of the text,
computed in chunks of positions so the logits never exceed (chunk, V).

Padding follows ``tokenizer.padding_side`` (left or right); positions are derived from the
attention mask so both give the same loss. Nothing here needs gradients: every method works
under ``torch.inference_mode()``, which is the caller's job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from pairzero.config import TaskConfig
from pairzero.tasks.data import Example

__all__ = ["Objective", "make_objective", "verbalizer_token_ids"]

log = logging.getLogger(__name__)

# Positions whose vocabulary logits are formed at once in the LM loss: (chunk, V) fp32.
_LM_CHUNK_POSITIONS = 256


def verbalizer_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    """First token id of each verbalizer word (as MeZO), which must all differ.

    A word that splits into several tokens is scored by its first token (logged as a warning).
    """
    ids: list[int] = []
    for word in words:
        toks = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not toks:
            raise ValueError(f"task.verbalizer: {word!r} encodes to no token")
        if len(toks) > 1:
            log.warning("verbalizer word %r is %d tokens; scoring its first token", word, len(toks))
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"task.verbalizer: {list(words)!r} share a first token ({ids})")
    return ids


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The base decoder (hidden states before the LM head): ``model.model.decoder`` for OPT."""
    get = getattr(model, "get_decoder", None)
    dec = get() if callable(get) else None
    if dec is None:
        raise ValueError(f"model: {type(model).__name__} has no get_decoder(); need a causal LM")
    return dec


def _hidden_states(model: torch.nn.Module, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final hidden states (B, S, H) of the decoder (final layer norm / projection included)."""
    mask = encoded["attention_mask"]  # (B, S), 1 = token, 0 = pad
    # Position of each token among the real tokens of its row: left padding shifts nothing.
    position_ids = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, S)
    out = _decoder(model)(
        input_ids=encoded["input_ids"], attention_mask=mask, position_ids=position_ids, use_cache=False
    )
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _head_rows(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows (C, H) of the output embedding (and bias (C,)) for token ids (C,)."""
    head = cast(Callable[[], torch.nn.Module | None], model.get_output_embeddings)()  # Hugging Face
    if head is None:
        raise ValueError(f"model: {type(model).__name__} has no output embedding (lm_head)")
    bias = getattr(head, "bias", None)
    return cast(torch.Tensor, head.weight)[ids], (bias[ids] if bias is not None else None)


class Objective:
    """Encodes examples and computes the loss; built by :func:`make_objective`."""

    def __init__(self, cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        if "{sentence}" not in cfg.template:
            raise ValueError(f"task.template: {cfg.template!r} must contain '{{sentence}}'")
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.kind = cfg.kind
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("tokenizer: has neither a pad nor an eos token to pad with")
        self.candidate_ids = (
            torch.tensor(verbalizer_token_ids(tokenizer, cfg.verbalizer), dtype=torch.long)
            if cfg.kind == "classification"
            else None
        )

    # ------------------------------------------------------------------ encoding
    def _text(self, example: Example) -> str:
        if self.kind == "classification":
            return self.cfg.template.format(sentence=example.text)
        return example.text

    def encode(self, batch: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Token ids (B, S), attention mask (B, S) and labels (B,), padded per ``padding_side``.

        Prompts longer than ``max_length`` keep their special prefix (BOS) and their END, so
        the " It was" the verbalizer follows is never truncated away.
        """
        if not batch:
            raise ValueError("batch: is empty")
        max_len = self.cfg.max_length
        rows: list[list[int]] = []
        for ex in batch:
            ids = list(self.tokenizer(self._text(ex), add_special_tokens=True)["input_ids"])
            if len(ids) > max_len:
                n_prefix = 1 if self.tokenizer.bos_token_id is not None and ids[0] == self.tokenizer.bos_token_id else 0
                ids = ids[:n_prefix] + ids[len(ids) - (max_len - n_prefix):]
            rows.append(ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, ids in enumerate(rows):
            sl = slice(width - len(ids), width) if left else slice(0, len(ids))
            input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
            mask[i, sl] = 1
        labels = torch.tensor([ex.label for ex in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    # ------------------------------------------------------------------ losses
    def candidate_logits(self, model: torch.nn.Module, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, C) of the verbalizer tokens at each row's last real token."""
        if self.candidate_ids is None:
            raise ValueError("task.kind: 'lm' has no verbalizer candidates")
        hidden = _hidden_states(model, encoded)  # (B, S, H)
        mask = encoded["attention_mask"]
        # Index of the last real token: highest position with mask 1 (left or right padding).
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # (B,)
        h_last = hidden[torch.arange(hidden.shape[0]), last]  # (B, H)
        weight, bias = _head_rows(model, self.candidate_ids.to(hidden.device))  # (C, H), (C,)
        logits = h_last.float() @ weight.float().T  # (B, C)
        return logits + bias.float() if bias is not None else logits

    def _lm_token_losses(
        self, model: torch.nn.Module, encoded: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Next-token NLL (nats) of every target token (N,), their top-1 hits (N,), and N.

        Nothing (B, S, V)-sized is stored: the logits are formed ``_LM_CHUNK_POSITIONS`` rows
        at a time.
        """
        hidden = _hidden_states(model, encoded)[:, :-1]  # (B, S-1, H) predicts tokens 1..S-1
        mask = encoded["attention_mask"]
        valid = (mask[:, :-1] * mask[:, 1:]).bool()  # both the context token and target real
        h = hidden[valid]  # (N, H)
        targets = encoded["input_ids"][:, 1:][valid]  # (N,)
        head = cast(Callable[[], torch.nn.Module | None], model.get_output_embeddings)()  # Hugging Face
        if head is None:
            raise ValueError(f"model: {type(model).__name__} has no output embedding (lm_head)")
        nll: list[torch.Tensor] = [torch.zeros(0)]
        hits: list[torch.Tensor] = [torch.zeros(0, dtype=torch.bool)]
        for start in range(0, h.shape[0], _LM_CHUNK_POSITIONS):
            logits = head(h[start : start + _LM_CHUNK_POSITIONS]).float()  # (chunk, V)
            tgt = targets[start : start + _LM_CHUNK_POSITIONS]
            nll.append(F.cross_entropy(logits, tgt, reduction="none"))
            hits.append(logits.argmax(dim=-1) == tgt)
        return torch.cat(nll), torch.cat(hits), int(targets.numel())

    def _micro_batches(self, encoded: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Row slices of ``encoded`` of ``task.micro_batch_size`` examples (one if 0).

        Slices keep the batch's padded width, so every row is computed as in the whole batch.
        """
        n = int(encoded["input_ids"].shape[0])
        mb = self.cfg.micro_batch_size or n
        return [{k: v[a : a + mb] for k, v in encoded.items()} for a in range(0, n, mb)]

    def per_example_losses(self, model: torch.nn.Module, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """The terms (nats) whose mean is :meth:`loss`: one per example (classification) or one
        per target token (LM), formed micro-batch by micro-batch (``task.micro_batch_size``),
        so only one micro-batch's activations are alive at a time."""
        parts = []
        for mb in self._micro_batches(encoded):
            if self.kind == "classification":
                logits = self.candidate_logits(model, mb)
                parts.append(F.cross_entropy(logits, mb["labels"].to(logits.device), reduction="none"))
            else:
                parts.append(self._lm_token_losses(model, mb)[0])
        return torch.cat(parts)

    def loss(self, model: torch.nn.Module, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar fp32 mean loss (nats) of the batch: the mean of :meth:`per_example_losses`.

        In one pass (``task.micro_batch_size`` 0 or the whole batch) a classification loss is
        ``cross_entropy``'s own mean, bit for bit what it always was (a mean of the
        ``reduction='none'`` terms differs in the last bits, and those move every learning
        curve). With micro-batches the terms of the whole batch are reduced once by ``mean``,
        so the scalar differs from the one-pass value only by rounding: within 64 fp32 ulps
        (``tests/test_tasks_objective.py``; measured: 0-2 ulps). Both losses of a ZO step use
        the same micro-batches, so g is computed consistently.
        """
        if self.kind == "classification" and len(self._micro_batches(encoded)) == 1:
            # one pass: the reduction the loss always had, so results stay bit for bit
            logits = self.candidate_logits(model, encoded)
            return F.cross_entropy(logits, encoded["labels"].to(logits.device))
        terms = self.per_example_losses(model, encoded)
        if terms.numel() == 0:
            raise ValueError("batch: no target tokens (every text is a single token)")
        return terms.mean()

    def evaluate(
        self, model: torch.nn.Module, examples: Sequence[Example], batch_size: int = 64
    ) -> dict[str, float]:
        """Mean loss (nats) and accuracy over ``examples``.

        Classification: accuracy of the argmax over the verbalizer; LM: top-1 next-token
        accuracy. Runs under ``torch.inference_mode()`` itself.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size!r} must be >= 1")
        if not examples:
            raise ValueError("examples: is empty")
        loss_sum, correct, count = 0.0, 0, 0
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                enc = self.encode(examples[start : start + batch_size])
                if self.kind == "classification":
                    logits = self.candidate_logits(model, enc)
                    labels = enc["labels"]
                    loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                    correct += int((logits.argmax(dim=-1) == labels).sum())
                    count += len(labels)
                else:
                    nll, ok, n = self._lm_token_losses(model, enc)
                    loss_sum += float(nll.sum())
                    correct += int(ok.sum())
                    count += n
        return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}


def make_objective(cfg: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> Objective:
    """The loss of ``cfg.kind`` ('classification' or 'lm') for ``tokenizer``.

    The prompt is the task's own where ``cfg`` leaves the generic one
    (:func:`pairzero.tasks.with_task_prompt`).
    """
    from pairzero.tasks import with_task_prompt

    if cfg.kind not in ("classification", "lm"):
        raise ValueError(f"task.kind: {cfg.kind!r} is not one of 'classification', 'lm'")
    return Objective(with_task_prompt(cfg), tokenizer)
