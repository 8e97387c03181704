"""Message schema: round trip of every type, and rejection of malformed input by decode()."""

from __future__ import annotations

import json

import pytest

from pairzero.protocol.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Calibrate,
    CalResult,
    CatchupRequest,
    CatchupResponse,
    ClockCheck,
    ClockReport,
    Error,
    Heartbeat,
    Join,
    JoinAck,
    JoinReject,
    Leave,
    MsgType,
    Precoding,
    PrivacyTerms,
    ProtocolError,
    Ready,
    Round,
    RoundRecord,
    Schedule,
    TxEvent,
    Update,
    decode,
    encode,
    make,
)

EXP = "exp-1"
REC = RoundRecord(EXP, 3, 2**62 + 5, -0.1 + 0.2, 1e-4, (0, 2), 0.5, 0.0, None, "ab" * 32, 1.7e9)
BODIES = [
    Join(1, "m" * 64, "h" * 64, "key", 0),
    Join(1, "m" * 64, "h" * 64, "", 7, PrivacyTerms(True, 0.35, 8.0, 1e-5, 200)),
    JoinAck(1, 5, 10),
    JoinReject(1, "manifest digest mismatch"),
    Round(3, 123, 0.5, 1e-4),
    Schedule(3, 1, 4096, 0.25, 0.01, 0.02, Precoding(0.3, -0.4, 1e-5, -1.25, 4200.5, 0.0421, 3e-4)),
    Schedule(3, 2, 2**44, 0.25, 0.0, 0.0, None),
    Ready(3, 1, True, 0.1 + 0.2),
    Ready(3, 1, True, None, 0.25, 0.003, (TxEvent(2, "late_burst", "UHD time_error"),)),
    Ready(3, 1, True, None, 0.25, 0.003, (), -0.0015),
    Update(3, 123, -1.2345678901234567e-7, 1e-4, (0, 1, 2), None),
    Leave(1, "bye"),
    CatchupRequest(1, 0),
    CatchupResponse(1, 3, (REC,), False, 4),
    Heartbeat(-1, 4),
    Error("not_joined", "send JOIN first"),
    Calibrate(2, 0, True, 43.25, 0.891, -2.5, 1.375, 2**40),
    CalResult(2, 0, 43.25, 0.891, -2.5, 1.375, True, ""),
    Ready(3, 1, True, None, 0.25, 0.003, (), None, 0.731),
    ClockCheck(2, 2**61 + 5),
    ClockReport(2, 2**61 + 5, 29_438_610.000_123_4, 1_796_664_210.6),
    ClockReport(2, 7, None, None),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_protocol_roundtrip_is_exact(body) -> None:
    # Prepare
    msg = make(EXP, 3, body)
    # Execute
    back = decode(encode(msg), EXP)
    # Assert: equal dataclasses, floats bit-identical (== on dataclass compares floats exactly)
    assert back == msg
    assert back.type == msg.type


def _wire(**over) -> bytes:
    obj = {"v": PROTOCOL_VERSION, "exp": EXP, "t": 0, "type": "HEARTBEAT",
           "body": {"node": 1, "next_round": 0}}
    obj.update(over)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b'{"v": 1, "exp"', "invalid JSON"),
        (b"[1, 2]", "top level"),
        (_wire(v=PROTOCOL_VERSION - 1), "protocol version"),
        (_wire(v=True), "protocol version"),
        (_wire(exp="other"), "experiment id"),
        (_wire(type="PING"), "unknown message type"),
        (_wire(t=-1), "t:"),
        (_wire(t=1.5), "t:"),
        (_wire(body={"node": "1", "next_round": 0}), "body.node"),
        (_wire(body={"node": 1}), "missing ['next_round']"),
        (_wire(body={"node": 1, "next_round": 0, "x": 1}), "unknown ['x']"),
        (_wire(extra=1), "envelope keys"),
        (_wire(type="READY", body={"t": 0, "node": 1, "scalar_ready": 1, "digital_scalar": 0.5,
                                   "compute_s": 0.0, "tx_prep_s": 0.0, "tx_events": [],
                                   "tx_slack_s": None, "spent_mu": None}),
         "scalar_ready"),
        (_wire(type="READY").replace(b'"body": {"node": 1, "next_round": 0}',
                                     b'"body": {"t": 0, "node": 1, "scalar_ready": true, "digital_scalar": NaN, '
                                     b'"compute_s": 0.0, "tx_prep_s": 0.0, "tx_events": [], "tx_slack_s": null, '
                                     b'"spent_mu": null}'),
         "non-finite"),
        (_wire(type="READY").replace(b'"body": {"node": 1, "next_round": 0}',
                                     b'"body": {"t": 0, "node": 1, "scalar_ready": true, "digital_scalar": 1e999, '
                                     b'"compute_s": 0.0, "tx_prep_s": 0.0, "tx_events": [], "tx_slack_s": null, '
                                     b'"spent_mu": null}'),
         "non-finite"),
        (_wire(type="READY", body={"t": 0, "node": 1, "scalar_ready": True, "digital_scalar": None,
                                   "compute_s": 0.0, "tx_prep_s": 0.0,
                                   "tx_events": [{"t": 0, "kind": "meltdown", "detail": ""}],
                                   "tx_slack_s": None, "spent_mu": None}),
         "kind"),
        (_wire(type="READY", body={"t": 0, "node": 1, "scalar_ready": True, "digital_scalar": None,
                                   "compute_s": 0.0, "tx_prep_s": 0.0, "tx_events": [],
                                   "tx_slack_s": None, "spent_mu": -0.5}),
         "spent_mu"),
        (_wire(type="SCHEDULE", body={"t": 0, "node": 1, "tx_sample": -2, "eta": 1.0,
                                      "noise_std": 0.0, "sigma_a": 0.0, "precoding": None}),
         "tx_sample"),
        (b"[" * 100000 + b"]" * 100000, "JSON"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "exceeds the limit"),
        (_wire(t=2**64), "t:"),
    ],
)
def test_protocol_decode_rejects_malformed(data: bytes, fragment: str) -> None:
    # Execute / Assert: a ProtocolError (a ValueError) whose text names the problem
    with pytest.raises(ProtocolError, match=None) as ei:
        decode(data, EXP)
    assert isinstance(ei.value, ValueError)
    assert fragment in str(ei.value)


def test_protocol_make_refuses_invalid_outgoing() -> None:
    with pytest.raises(ProtocolError, match="non-finite"):
        make(EXP, 0, Ready(0, 1, True, float("nan")))
    with pytest.raises(ProtocolError, match="eta"):
        make(EXP, 0, Schedule(0, 1, 100, -1.0, 0.0, 0.0, None))
    with pytest.raises(ProtocolError, match="kind"):
        make(EXP, 0, Ready(0, 1, True, None, 0.1, 0.0, (TxEvent(0, "melted", ""),)))
    with pytest.raises(ProtocolError, match="compute_s"):
        make(EXP, 0, Ready(0, 1, True, None, -0.1, 0.0, ()))


def test_protocol_every_type_has_a_body() -> None:
    assert {make(EXP, 0, b).type for b in BODIES} == set(MsgType)


def _body(type_: str, body: dict) -> bytes:
    if type_ == "READY":  # the timing fields every READY carries
        body = {"compute_s": 0.0, "tx_prep_s": 0.0, "tx_events": [], "tx_slack_s": None,
                "spent_mu": None, **body}
    return json.dumps({"v": PROTOCOL_VERSION, "exp": EXP, "t": 0, "type": type_, "body": body}).encode()


_REC = {"experiment": EXP, "t": 0, "seed": 1, "g_hat": 0.5, "lr": 0.1, "active": [0, 1],
        "eta": 1.0, "sigma_a": 0.0, "mu": None, "model_hash": None, "timestamp": 1.0}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        # node id -1 is the AP's, in its heartbeats only
        (_body("JOIN", {"node": -1, "manifest_digest": "m", "model_hash": "", "key_id": "",
                        "next_round": 0, "terms": None}), "AP's id"),
        (_body("READY", {"t": 0, "node": -1, "scalar_ready": True, "digital_scalar": 0.5}), "AP's id"),
        (_body("LEAVE", {"node": -1, "reason": ""}), "AP's id"),
        # a node not ready has no scalar to send
        (_body("READY", {"t": 0, "node": 1, "scalar_ready": False, "digital_scalar": 0.5}),
         "scalar_ready is false"),
        # who took part is listed once each, in ascending order
        (_body("UPDATE", {"t": 0, "seed": 1, "g_hat": 0.5, "lr": 0.1, "active": [2, 1],
                          "expected_hash": None}), "ascending"),
        (_body("UPDATE", {"t": 0, "seed": 1, "g_hat": 0.5, "lr": 0.1, "active": [1, 1],
                          "expected_hash": None}), "duplicate"),
        (_body("UPDATE", {"t": 0, "seed": 1, "g_hat": 0.5, "lr": 0.1,
                          "active": list(range(70000)), "expected_hash": None}), "exceed"),
        (_body("CATCHUP_RESPONSE", {"node": 1, "from_round": 0, "more": False, "next_round": 1,
                                    "records": [{**_REC, "active": [1, 0]}]}), "ascending"),
        # catch-up records of another experiment
        (_body("CATCHUP_RESPONSE", {"node": 1, "from_round": 0, "more": False, "next_round": 1,
                                    "records": [{**_REC, "experiment": "other"}]}),
         "not this message's experiment"),
        (_body("HEARTBEAT", {"node": 1, "next_round": -5}), "body.next_round"),
        (_body("READY", {"t": 0, "node": 70000, "scalar_ready": True, "digital_scalar": 0.5}),
         "body.node"),
        (_body("READY", {"t": 0, "node": 1, "scalar_ready": True, "digital_scalar": "0.5"}),
         "expected a number"),
        # a calibration outside what a node can apply
        (_body("CALIBRATE", {"node": 1, "iteration": 0, "apply": True, "tx_gain_db": 40.0,
                             "digital_scale": 1.5, "phase_rad": 0.0, "timing_advance_samples": 0.0,
                             "tx_sample": 100}), "body.digital_scale"),
        (_body("CALIBRATE", {"node": 1, "iteration": 0, "apply": True, "tx_gain_db": 40.0,
                             "digital_scale": 0.5, "phase_rad": 0.0, "timing_advance_samples": 30.0,
                             "tx_sample": 100}), "body.timing_advance_samples"),
        (_body("CAL_RESULT", {"node": -1, "iteration": 0, "tx_gain_db": 40.0, "digital_scale": 0.5,
                              "phase_rad": 0.0, "timing_advance_samples": 0.0, "sent": True,
                              "detail": ""}), "AP's id"),
    ],
)
def test_protocol_decode_rejects_fields_that_contradict_each_other(data: bytes, fragment: str) -> None:
    # Execute / Assert
    with pytest.raises(ProtocolError) as ei:
        decode(data, EXP)
    assert fragment in str(ei.value)


def test_protocol_make_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(ProtocolError, match="AP's id"):
        make(EXP, 0, Ready(0, -1, True, 0.5))
    with pytest.raises(ProtocolError, match="ascending"):
        make(EXP, 0, Update(0, 1, 0.5, 0.1, (2, 0), None))
    assert make(EXP, 0, Heartbeat(-1, 0)).body.node == -1  # the AP's own heartbeat
