"""The privacy ledger proves its length and content as the round log does (hash chain + head),
and an AP never resumes privacy accounting from the round log alone
(pairzero.ota.charging.PrivacyLedger, RadioPrivacy.restore).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from access_point.roundlog import RoundLog
from pairzero.config import load_config
from pairzero.launch import free_port_block
from pairzero.ota.charging import (
    LedgerCorrupt,
    PrivacyLedger,
    RadioPrivacy,
    ledger_head_path,
    terms_of,
)
from pairzero.ota.privacy import PrivacyRule
from pairzero.protocol.messages import RoundRecord
from pairzero.runinfo import experiment_id, write_provenance

REPO = Path(__file__).resolve().parent.parent


def _terms():
    return terms_of(load_config(None, ["nodes.count=2", "run.rounds=10"]))


def _ledger(path: Path, plans: int = 3) -> None:
    """A ledger with ``plans`` planned and charged rounds."""
    led = PrivacyLedger(path, _terms())
    for t in range(plans):
        led.append({"kind": "plan", "id": f"p{t}", "t": t, "mu": {"0": 0.1, "1": 0.2},
                    "worst": {"0": 0.3, "1": 0.4}})
        led.append({"kind": "charge", "id": f"p{t}", "t": t, "mu": {"0": 0.1, "1": 0.2},
                    "planned": {}, "present": [0, 1]})
    led.close()


def test_the_head_records_every_entry_and_a_reopened_ledger_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "privacy.jsonl"
    _ledger(path)
    head = json.loads(ledger_head_path(path).read_text())
    lines = path.read_text().splitlines()
    assert head["entries"] == len(lines) == 7
    assert head["chain"] == json.loads(lines[-1])["chain"]
    again = PrivacyLedger(path, _terms())
    again.append({"kind": "sent", "t": 9, "mu": 0.5})
    again.close()
    assert len(PrivacyLedger(path, _terms()).entries) == 8


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_text("\n".join(p.read_text().splitlines()[:-2]) + "\n"), "holds 5 entries"),
])
def test_a_ledger_deleted_emptied_or_cut_short_is_refused(tmp_path: Path, damage, fragment) -> None:
    path = tmp_path / "privacy.jsonl"
    _ledger(path)
    damage(path)
    with pytest.raises(LedgerCorrupt, match=fragment) as ei:
        PrivacyLedger(path, _terms())
    assert "\n" not in str(ei.value)


def test_a_changed_charge_breaks_the_chain_even_with_its_line_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "privacy.jsonl"
    _ledger(path)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["mu"]["0"] = 0.0001  # a smaller charge: budget the node does not have
    lines[2] = json.dumps(entry, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerCorrupt, match=r"privacy.jsonl:3: the privacy ledger's hash chain breaks"):
        PrivacyLedger(path, _terms())


def test_a_line_stripped_of_its_chain_in_a_chained_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "privacy.jsonl"
    _ledger(path)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[4])
    del entry["chain"]
    lines[4] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerCorrupt, match=r"privacy.jsonl:5: the privacy ledger's hash chain breaks"):
        PrivacyLedger(path, _terms())


def test_a_chained_ledger_without_its_head_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "privacy.jsonl"
    _ledger(path)
    ledger_head_path(path).unlink()
    with pytest.raises(LedgerCorrupt, match="no head file privacy.head"):
        PrivacyLedger(path, _terms())


def test_a_ledger_ahead_of_its_head_is_accepted_and_a_torn_line_cut(tmp_path: Path) -> None:
    # A stop between a line's fsync and the head's update, then a torn line of the next write
    path = tmp_path / "privacy.jsonl"
    _ledger(path)
    head = ledger_head_path(path).read_text()
    led = PrivacyLedger(path, _terms())
    led.append({"kind": "sent", "t": 5, "mu": 0.5})
    led.close()
    ledger_head_path(path).write_text(head)
    with path.open("a") as f:
        f.write('{"kind":"sent","t":6,')
    again = PrivacyLedger(path, _terms())
    assert again.entries[-1] == {"kind": "sent", "t": 5, "mu": 0.5}
    assert json.loads(ledger_head_path(path).read_text())["entries"] == 8


def test_a_ledger_from_before_the_chain_is_chained_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "privacy.jsonl"
    lines = [{"kind": "terms", **json.loads(json.dumps(_terms().__dict__))},
             {"kind": "sent", "t": 0, "mu": 0.25}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level(logging.WARNING):
        led = PrivacyLedger(path, _terms())
    assert "before the privacy ledger was hash chained" in caplog.text
    led.append({"kind": "sent", "t": 1, "mu": 0.25})
    led.close()
    assert len(PrivacyLedger(path, _terms()).entries) == 3


def _record(exp: str, t: int, active: tuple[int, ...]) -> RoundRecord:
    return RoundRecord(exp, t, t, 0.1, 1e-3, active, 0.5, 0.0, 0.2 if active else None, None, 1.0)


def test_an_ap_never_rebuilds_the_account_from_the_round_log_alone(tmp_path: Path) -> None:
    # Prepare: both the ledger and its head are gone; the round log has payload rounds
    cal = PrivacyRule.from_target(8.0, 1e-5, 10)
    rp = RadioPrivacy(cal, 2, 1.0, 1e-6, ledger=PrivacyLedger(tmp_path / "privacy.jsonl", _terms()))
    records = [_record("e", 0, ()), _record("e", 1, ()), _record("e", 2, (0, 1))]
    # Execute / Assert
    with pytest.raises(LedgerCorrupt, match="round log has 1 rounds with payloads"):
        rp.restore(records)
    # pilot-only rounds charge nothing: nothing to rebuild
    rp2 = RadioPrivacy(cal, 2, 1.0, 1e-6, ledger=PrivacyLedger(tmp_path / "p2.jsonl", _terms()))
    assert rp2.restore(records[:2]) == []


@pytest.mark.e2e  # starts the AP process
@pytest.mark.parametrize("damage, fragment", [
    ("deleted", "is missing"),
    ("truncated", "holds 5 entries but privacy.head records 7"),
])
def test_ap_refuses_a_deleted_or_truncated_privacy_ledger_in_one_line_with_status_1(
        tmp_path: Path, damage: str, fragment: str) -> None:
    # Prepare: a loopback run directory with 3 committed payload rounds and their ledger; the
    # ledger is deleted or loses its last round (its head stays), then the AP is restarted
    port = free_port_block(2)
    overrides = ["radio.mode=loopback", "network.curve=false", "nodes.count=2", "run.rounds=10",
                 f"network.control_port={port}", f"network.sample_port_base={port + 1}"]
    cfg = load_config(None, overrides)
    run = tmp_path / "run"
    run.mkdir()
    write_provenance(cfg, run)
    led = PrivacyLedger(run / "privacy.jsonl", terms_of(cfg))
    rl = RoundLog.open(run / "rounds.sqlite", experiment_id(cfg))
    for t in range(3):
        led.append({"kind": "plan", "id": f"p{t}", "t": t, "mu": {"0": 0.1, "1": 0.1},
                    "worst": {"0": 0.1, "1": 0.1}})
        led.append({"kind": "charge", "id": f"p{t}", "t": t, "mu": {"0": 0.1, "1": 0.1},
                    "planned": {}, "present": [0, 1]})
        rl.append(_record(experiment_id(cfg), t, (0, 1)))
    led.close()
    rl.close()
    ledger = run / "privacy.jsonl"
    before = b""
    if damage == "deleted":
        ledger.unlink()
    else:
        before = ("\n".join(ledger.read_text().splitlines()[:-2]) + "\n").encode()
        ledger.write_bytes(before)
    # Execute
    res = subprocess.run([sys.executable, "-m", "pairzero.cli", "ap", "--run-dir", str(run),
                          *(a for o in overrides for a in ("--set", o))],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    # Assert: one line naming the file, status 1, the round log untouched
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("pairzero ap:")]
    assert res.returncode == 1, res.stderr[-3000:]
    assert len(lines) == 1 and "privacy.jsonl" in lines[0] and fragment in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    # the ledger left as found
    assert (ledger.read_bytes() == before) if damage == "truncated" else not ledger.exists()
