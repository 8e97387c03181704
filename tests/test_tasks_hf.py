"""``hf:`` tasks through the real Hugging Face ``datasets`` library (the ``hf`` extra).

Datasets are written into ``tmp_path`` as JSON lines and loaded as ``hf:/abs/dir`` (no hub
access: datasets' packaged json builder reads the directory). The hub cases run in a
subprocess against an endpoint on 127.0.0.1 that refuses connections, or with
HF_HUB_OFFLINE=1, and an empty HF_HOME: nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")  # scripts/setup.sh installs it (extra `hf`)

from pairzero.config import TaskConfig  # noqa: E402
from pairzero.tasks import Example, TaskUnavailableError, load_task  # noqa: E402
from pairzero.tasks.data import _parse_hf_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOAD_SST2 = """
import sys
from pairzero.config import TaskConfig
from pairzero.tasks import TaskUnavailableError, load_task
try:
    load_task(TaskConfig(name="hf:glue/sst2"))
except TaskUnavailableError as e:
    print(e)
    sys.exit(3)
"""


@pytest.fixture(autouse=True)
def _datasets_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The arrow files datasets builds from the json go to tmp_path, not ~/.cache/huggingface.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any HF_* setting, an empty HF_HOME, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), **extra)
    return env


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A 127.0.0.1 port that is bound but not listening: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_local_dir_with_train_and_validation_loads_examples_and_labels(tmp_path: Path) -> None:
    # Prepare
    d = tmp_path / "reviews"
    _write_jsonl(d / "train.jsonl", [{"text": " good film ", "label": 1}, {"text": "dull", "label": 0},
                                     {"text": "superb", "label": 1}])
    _write_jsonl(d / "validation.jsonl", [{"text": "awful", "label": 0}, {"text": "lovely", "label": 1}])

    # Execute
    data = load_task(TaskConfig(name=f"hf:{d}"))

    # Assert: file order kept, text stripped
    assert data.train == (Example("good film", 1), Example("dull", 0), Example("superb", 1))
    assert data.validation == (Example("awful", 0), Example("lovely", 1))


def test_glue_sst2_layout_uses_sentence_column_and_skips_unlabelled_test(tmp_path: Path) -> None:
    # Prepare: GLUE/SST-2 columns (sentence, label, idx); its test split is labelled -1
    d = tmp_path / "sst2"
    _write_jsonl(d / "train.jsonl", [{"sentence": "hide new secretions ", "label": 0, "idx": 0},
                                     {"sentence": "a charming film ", "label": 1, "idx": 1}])
    _write_jsonl(d / "validation.jsonl", [{"sentence": "it 's a charming journey . ", "label": 1, "idx": 0}])
    _write_jsonl(d / "test.jsonl", [{"sentence": "unknown ", "label": -1, "idx": 0}])

    # Execute
    data = load_task(TaskConfig(name=f"hf:{d}"))

    # Assert
    assert data.train == (Example("hide new secretions", 0), Example("a charming film", 1))
    assert data.validation == (Example("it 's a charming journey .", 1),)


def test_unlabelled_test_split_is_not_validation_a_labelled_one_is(tmp_path: Path) -> None:
    # Prepare: no validation split; one dataset whose test labels are -1, one fully labelled
    train = [{"sentence": f"s{i}", "label": i % 2} for i in range(20)]
    unlabelled, labelled = tmp_path / "unlabelled", tmp_path / "labelled"
    _write_jsonl(unlabelled / "train.jsonl", train)
    _write_jsonl(unlabelled / "test.jsonl", [{"sentence": "t", "label": -1}])
    _write_jsonl(labelled / "train.jsonl", train)
    _write_jsonl(labelled / "test.jsonl", [{"sentence": "t", "label": 1}])

    # Execute
    held_out = load_task(TaskConfig(name=f"hf:{unlabelled}"))
    from_test = load_task(TaskConfig(name=f"hf:{labelled}"))

    # Assert: the unlabelled test split is ignored (train hold-out), the labelled one is used
    assert (len(held_out.train), len(held_out.validation)) == (18, 2)
    assert from_test.validation == (Example("t", 1),) and len(from_test.train) == 20


def test_train_only_dataset_holds_out_a_seeded_tenth(tmp_path: Path) -> None:
    # Prepare
    d = tmp_path / "train-only"
    rows = [{"text": f"example {i}", "label": i % 2} for i in range(50)]
    _write_jsonl(d / "train.jsonl", rows)
    cfg = TaskConfig(name=f"hf:{d}")

    # Execute
    first, again, other = load_task(cfg, seed=7), load_task(cfg, seed=7), load_task(cfg, seed=8)

    # Assert: 45 + 5, disjoint and complete, a function of the seed
    assert (len(first.train), len(first.validation)) == (45, 5)
    texts = [e.text for e in first.train + first.validation]
    assert sorted(texts) == sorted(f"example {i}" for i in range(50))
    assert again == first
    assert other.validation != first.validation


def test_missing_label_column_names_the_columns(tmp_path: Path) -> None:
    # Prepare
    d = tmp_path / "no-label"
    _write_jsonl(d / "train.jsonl", [{"text": "fine", "sentiment": "pos"}])

    # Execute / Assert
    with pytest.raises(TaskUnavailableError, match=r"need a text column.*'label'.*\['text', 'sentiment'\]"):
        load_task(TaskConfig(name=f"hf:{d}"))


def test_string_labels_are_refused_with_the_value(tmp_path: Path) -> None:
    # Prepare
    d = tmp_path / "string-labels"
    _write_jsonl(d / "train.jsonl", [{"text": "fine", "label": "positive"}])

    # Execute / Assert
    with pytest.raises(TaskUnavailableError, match="integer class ids.*'positive'"):
        load_task(TaskConfig(name=f"hf:{d}"))


def test_missing_local_dir_is_task_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TaskUnavailableError, match="no such dataset"):
        load_task(TaskConfig(name=f"hf:{tmp_path / 'absent'}"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("glue/sst2", ("glue", "sst2")),
        ("imdb", ("imdb", None)),
        ("nyu-mll/glue:sst2", ("nyu-mll/glue", "sst2")),
        ("stanfordnlp/sst2:", ("stanfordnlp/sst2", None)),
        ("/data/my:set/v1", ("/data/my:set/v1", None)),
        ("./data/sst2", (str(Path.cwd() / "data" / "sst2"), None)),
    ],
)
def test_spec_forms_map_to_load_dataset_path_and_config(spec: str, expected: tuple) -> None:
    assert _parse_hf_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "a/b/c", ":sst2", "a/b/c:x"])
def test_malformed_spec_is_a_value_error_naming_task_name(spec: str) -> None:
    with pytest.raises(ValueError, match="task.name"):
        load_task(TaskConfig(name=f"hf:{spec}"))


@pytest.mark.e2e
@pytest.mark.slow  # ~25 s, nearly all of it huggingface_hub's fixed retry back-off
def test_refused_hub_endpoint_gives_one_line_task_unavailable(tmp_path: Path, refusing_port: int) -> None:
    # Prepare: empty cache, hub endpoint refusing connections. huggingface_hub retries the
    # first request 5 times (1+2+4+8+8 s of back-off) before datasets gives up: ~23 s, idle.
    env = _hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{refusing_port}")

    # Execute
    res = subprocess.run([sys.executable, "-c", LOAD_SST2], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)

    # Assert: the project's error, one line, naming the task; only 127.0.0.1 was tried
    assert res.returncode == 3, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    assert "task.name 'hf:glue/sst2': the Hugging Face hub cannot be reached" in lines[0]
    assert "Traceback" not in res.stderr
    assert f"127.0.0.1:{refusing_port}" in res.stderr


@pytest.mark.e2e
def test_offline_mode_without_cache_gives_one_line_task_unavailable(tmp_path: Path) -> None:
    # Prepare
    env = _hub_env(tmp_path, HF_HUB_OFFLINE="1")

    # Execute
    res = subprocess.run([sys.executable, "-c", LOAD_SST2], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)

    # Assert
    assert res.returncode == 3, res.stderr
    assert res.stdout.count("\n") == 1
    assert "task.name 'hf:glue/sst2': the Hugging Face hub cannot be reached" in res.stdout
    assert "OfflineModeIsEnabled" in res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.e2e
def test_cli_reports_unavailable_hf_task_in_one_line_with_status_2(tmp_path: Path) -> None:
    # Prepare
    env = _hub_env(tmp_path, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pairzero.cli", "simulate", "--config", str(REPO / "configs" / "loopback.yaml"),
           "--set", "task.name=hf:glue/sst2", "--out", str(tmp_path / "runs")]

    # Execute
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)

    # Assert
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("pairzero simulate: error:")]
    assert len(errors) == 1 and "task.name 'hf:glue/sst2'" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
