"""Pre-train the embedded ``opt-tiny`` model and its tokenizer, reproducibly (seeded).

    .venv/bin/python scripts/pretrain_opt_tiny.py            # ~2-5 min on 2 CPU cores

Steps: (1) generate the pre-training corpus (pairzero.models.corpus; sentences equal to any
built-in task example are excluded) and write it to ``pairzero/models/assets/opt_tiny_corpus.txt``;
(2) train a byte-level BPE tokenizer (``tokenizers``, OPT conventions: ``</s>`` is BOS/EOS and
is prepended to every text, ``<pad>`` = 1); (3) train the OPT_TINY_ARCH model with AdamW
(backprop, causal LM loss) on 95 % of the documents; (4) save ``model.safetensors``,
``config.json`` and the tokenizer to ``pairzero/models/assets/opt_tiny/`` with a
``pretrain_report.json`` (held-out perplexity, zero-shot accuracy on builtin-sentiment, and
the polarity probe: how often P(positive adjectives) > P(negative adjectives) at the task
prompt's last position agrees with the label, i.e. whether the LM carries the sentence's
sentiment to where the verbalizer is scored).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

from pairzero.config import TaskConfig
from pairzero.log import setup_logging
from pairzero.models import OPT_TINY_ARCH, OPT_TINY_DIR
from pairzero.models.corpus import DEFAULT_DOCUMENTS, generate_corpus
from pairzero.tasks import load_task, make_objective
from pairzero.tasks.lexicon import NEGATIVE_ADJECTIVES, POSITIVE_ADJECTIVES

log = logging.getLogger("pretrain_opt_tiny")

CORPUS_PATH = OPT_TINY_DIR.parent / "opt_tiny_corpus.txt"
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in OPT


def build_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``corpus``; OPT-style: ``</s>`` prepended to every text."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=int(OPT_TINY_ARCH["max_position_embeddings"]),
    )


def batches(ids: list[list[int]], batch_size: int, rng: random.Random, pad: int):
    """Yield (input_ids, attention_mask, labels) for one shuffled epoch; labels -100 on pads."""
    order = list(range(len(ids)))
    rng.shuffle(order)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = [ids[i] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        m = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
            m[i, : len(r)] = 1
        yield x, m, x.masked_fill(m == 0, -100)


@torch.no_grad()
def held_out_nll(model: OPTForCausalLM, ids: list[list[int]], pad: int) -> float:
    """Mean next-token NLL (nats/token) over ``ids``."""
    model.eval()
    total, count = 0.0, 0
    for x, m, y in batches(ids, 64, random.Random(0), pad):
        n = int((y[:, 1:] != -100).sum())
        total += float(model(input_ids=x, attention_mask=m, labels=y).loss) * n
        count += n
    model.train()
    return total / max(count, 1)


@torch.no_grad()
def polarity_probe(model: OPTForCausalLM, tokenizer: PreTrainedTokenizerFast, objective, examples) -> float:
    """Accuracy of sum P(positive adjectives) > sum P(negative adjectives) after the prompt."""
    enc = objective.encode(examples)
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    last = enc["attention_mask"].sum(dim=1) - 1
    probs = logits[torch.arange(len(examples)), last].softmax(dim=-1)

    def first_ids(words: tuple[str, ...]) -> list[int]:
        return sorted({tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words})

    pos = probs[:, first_ids(POSITIVE_ADJECTIVES)].sum(dim=1)
    neg = probs[:, first_ids(NEGATIVE_ADJECTIVES)].sum(dim=1)
    return float(((pos > neg).long() == enc["labels"]).float().mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--documents", type=int, default=DEFAULT_DOCUMENTS)
    parser.add_argument("--vocab-size", type=int, default=int(OPT_TINY_ARCH["vocab_size"]))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OPT_TINY_DIR)
    parser.add_argument("--corpus-out", type=Path, default=CORPUS_PATH,
                        help="where the generated pre-training corpus is written")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    task = load_task(TaskConfig(name="builtin-sentiment"))
    task_texts = [e.text for e in task.train + task.validation]
    corpus = generate_corpus(args.documents, seed=args.seed, exclude=task_texts)
    args.corpus_out.parent.mkdir(parents=True, exist_ok=True)
    args.corpus_out.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    log.info("corpus: %d documents, %d characters -> %s", len(corpus), sum(map(len, corpus)), args.corpus_out)

    tokenizer = build_tokenizer(corpus, args.vocab_size)
    for word in (" great", " terrible"):
        log.info("verbalizer %r -> %s", word, tokenizer.tokenize(word))
    ids = [tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id] for doc in corpus]
    n_val = len(ids) // 20
    train_ids, val_ids = ids[n_val:], ids[:n_val]

    torch.manual_seed(args.seed)
    arch = dict(OPT_TINY_ARCH, vocab_size=len(tokenizer))
    model = OPTForCausalLM(OPTConfig(**arch))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    steps = args.epochs * (len(train_ids) // args.batch_size)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    rng = random.Random(args.seed)
    step = 0
    for epoch in range(args.epochs):
        for x, m, y in batches(train_ids, args.batch_size, rng, tokenizer.pad_token_id):
            loss = model(input_ids=x, attention_mask=m, labels=y).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                log.info("epoch %d step %d/%d loss %.3f", epoch, step, steps, float(loss.detach()))
        log.info("epoch %d: held-out NLL %.3f nats/token", epoch, held_out_nll(model, val_ids, tokenizer.pad_token_id))

    model.eval()
    val_nll = held_out_nll(model, val_ids, tokenizer.pad_token_id)
    objective = make_objective(TaskConfig(name="builtin-sentiment"), tokenizer)
    zero_shot = objective.evaluate(model, task.validation)
    probe = polarity_probe(model, tokenizer, objective, task.validation)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    report = {
        "seed": args.seed,
        "documents": len(corpus),
        "train_tokens": sum(map(len, train_ids)),
        "steps": step,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_nll_nats_per_token": round(val_nll, 4),
        "heldout_perplexity": round(math.exp(val_nll), 3),
        "zero_shot_builtin_sentiment": {k: round(v, 4) for k, v in zero_shot.items()},
        "polarity_probe_validation": probe,
        "seconds": round(time.perf_counter() - t0, 1),
        "threads": args.threads,
    }
    (args.out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("done: %s", json.dumps(report))


if __name__ == "__main__":
    main()
