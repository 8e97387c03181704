"""Control-plane message schema: versioned, typed, validated; JSON on the wire, never pickle.

Every message is one JSON object (UTF-8) with exactly five keys::

    {"v": PROTOCOL_VERSION, "exp": "<experiment id>", "t": <round>, "type": "ROUND", "body": {...}}

``t`` is the round the message refers to (for JOIN/HEARTBEAT/ERROR: the sender's current
round). ``body`` is one of the frozen dataclasses below, selected by ``type``; its keys must be
exactly the dataclass fields (unknown or missing keys are rejected), each of the declared type.

:func:`decode` is the one place where bytes from the network enter the program. It rejects,
with a :class:`ProtocolError` (a ``ValueError``) naming the problem: oversized input, invalid
UTF-8 / JSON, NaN or infinite numbers, a wrong protocol version, a foreign experiment id, an
unknown type, missing/unknown/wrongly typed fields and out-of-range values, and the rules that
tie fields together (:func:`_check_body`: only the AP's heartbeat carries node id -1, a READY
that is not ready carries no scalar, ``active`` lists ascend, catch-up records belong to this
experiment). Receivers log the error and drop the message; they never crash on
it. What decode cannot know (the enrolled node ids, the current round, the clip bound) the
receiver checks where it handles the message (:mod:`access_point.orchestrator`).

Floats travel as JSON numbers written by ``repr`` (shortest round-trip form), so a decoded
``g_hat`` is bit-identical to the AP's: every node applies exactly the same update.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_MESSAGE_BYTES",
    "AP_NODE_ID",
    "ProtocolError",
    "MsgType",
    "Join",
    "JoinAck",
    "JoinReject",
    "PrivacyTerms",
    "Round",
    "Precoding",
    "Schedule",
    "TxEvent",
    "TX_EVENT_KINDS",
    "Ready",
    "Update",
    "Leave",
    "CatchupRequest",
    "CatchupResponse",
    "RoundRecord",
    "Heartbeat",
    "ClockCheck",
    "ClockReport",
    "Error",
    "Calibrate",
    "CalResult",
    "Body",
    "Message",
    "encode",
    "decode",
    "make",
]

#: 2: SCHEDULE (the frame time and precoding, sent after the READYs); READY carries timings
#: and the events of the node's last frames; ROUND carries only what the compute needs.
#: 3: JOIN carries the node's privacy terms; a precoding carries the node's planned charge;
#: CALIBRATE / CAL_RESULT (pairzero calibrate over the control plane).
#: 4: READY carries the slack of the node's previous frame.
#: 5: READY carries what the node's own privacy ledger says it has spent; CLOCK_CHECK /
#: CLOCK_REPORT compare a joining node's radio device time with the AP's.
PROTOCOL_VERSION: Final = 5
#: Largest encoded message accepted (bytes). A catch-up response is paged to stay below it.
MAX_MESSAGE_BYTES: Final = 1 << 20
#: ``node`` value used by the AP in messages it originates (heartbeats).
AP_NODE_ID: Final = -1
#: Largest integer accepted anywhere (seeds, rounds): fits a signed 64-bit SQLite INTEGER.
MAX_INT: Final = (1 << 63) - 1
_MAX_STR: Final = 4096
_MAX_NODES: Final = 1 << 16


class ProtocolError(ValueError):
    """A message could not be decoded or validated; the text names the problem."""


class MsgType(StrEnum):
    """Message types (the ``type`` key on the wire)."""

    JOIN = "JOIN"
    JOIN_ACK = "JOIN_ACK"
    JOIN_REJECT = "JOIN_REJECT"
    ROUND = "ROUND"
    READY = "READY"
    SCHEDULE = "SCHEDULE"
    UPDATE = "UPDATE"
    LEAVE = "LEAVE"
    CATCHUP_REQUEST = "CATCHUP_REQUEST"
    CATCHUP_RESPONSE = "CATCHUP_RESPONSE"
    HEARTBEAT = "HEARTBEAT"
    ERROR = "ERROR"
    CALIBRATE = "CALIBRATE"
    CAL_RESULT = "CAL_RESULT"
    CLOCK_CHECK = "CLOCK_CHECK"
    CLOCK_REPORT = "CLOCK_REPORT"


# ----------------------------------------------------------------------------- bodies


@dataclass(frozen=True)
class PrivacyTerms:
    """What a node's privacy rests on, checked at JOIN: the clip bound G (``zo.clip``) and the
    target (``privacy.enabled``, ``privacy.epsilon``, ``privacy.delta``) over ``run.rounds``
    rounds. A node whose terms differ from the AP's is refused, the field named."""

    enabled: bool
    clip: float
    epsilon: float
    delta: float
    rounds: int

    def differences(self, other: PrivacyTerms) -> list[str]:
        """``"name: mine vs other's"`` for every field that differs (empty: the same terms)."""
        names = {"enabled": "privacy.enabled", "clip": "zo.clip (G)", "epsilon": "privacy.epsilon",
                 "delta": "privacy.delta", "rounds": "run.rounds (T)"}
        return [f"{label} {getattr(self, f)!r} vs {getattr(other, f)!r}"
                for f, label in names.items() if getattr(self, f) != getattr(other, f)]


@dataclass(frozen=True)
class Join:
    """Node -> AP: ask to take part.

    ``next_round`` is the first round the node has *not* applied (0 for a fresh model);
    ``model_hash`` is the hash of its current weights; ``manifest_digest`` the hash of the
    trainable-parameter manifest (name, shape, dtype, order) that keys the perturbations;
    ``key_id`` the node's CurveZMQ public key (Z85) or ``""`` without CurveZMQ; ``terms``: the
    privacy terms the node holds itself to (None: a node without them, refused by an AP that
    has terms).
    """

    node: int
    manifest_digest: str
    model_hash: str
    key_id: str
    next_round: int
    terms: PrivacyTerms | None = None


@dataclass(frozen=True)
class JoinAck:
    """AP -> node: accepted. ``next_round`` is the AP's first uncommitted round."""

    node: int
    next_round: int
    hash_every: int


@dataclass(frozen=True)
class JoinReject:
    """AP -> node: refused, with a human-readable reason (the node should exit)."""

    node: int
    reason: str


@dataclass(frozen=True)
class Precoding:
    """One node's payload precoding for a round (see :mod:`pairzero.phy.tx`).

    ``b_re``/``b_im``: complex amplitude b_k multiplying the scalar (linear, includes the channel
    inversion); ``cfo``: carrier offset to pre-compensate (cycles/sample); ``delay``: channel
    delay to pre-compensate (samples); ``ref_index``: absolute sample index at which b_k's
    phase holds; ``mu``: the Gaussian-DP mu the AP plans to charge this node for the payload
    (0: privacy off); ``noise_var``: the receiver-noise variance N0 at the aggregate the AP
    planned with (complex, a lower confidence bound), so the node can check ``mu`` itself.
    """

    b_re: float
    b_im: float
    cfo: float
    delay: float
    ref_index: float
    mu: float = 0.0
    noise_var: float = 0.0


@dataclass(frozen=True)
class Round:
    """AP -> nodes: start round ``t``: compute the scalar and answer READY.

    ``seed``: perturbation seed s_t (z = Z(s_t) is regenerated by every node, never sent);
    ``deadline_s``: seconds after this message within which READY must reach the AP; ``lr``:
    learning rate for the update. What goes on the air, and when, follows in SCHEDULE once the
    AP has the READYs (radio PHY only).
    """

    t: int
    seed: int
    deadline_s: float
    lr: float


@dataclass(frozen=True)
class Schedule:
    """AP -> one node, after the READYs: send round ``t``'s frame (radio PHY only).

    ``tx_sample``: sample index on the shared sample clock (device time x sample rate on
    radios) at which the frame starts; ``eta``: OTA alignment gain eta_t (linear amplitude);
    ``noise_std``: this node's artificial-noise share (real amplitude per real dimension, 0 =
    none); ``sigma_a``: total artificial-noise std the AP plans for; ``precoding``: this node's
    payload precoding from the latest pilots, or None: the node sends its preamble and pilot
    only (it is not in S_t this round).
    """

    t: int
    node: int
    tx_sample: int
    eta: float
    noise_std: float
    sigma_a: float
    precoding: Precoding | None


#: What a node's radio front end can report about one of its frames (pairzero.phy.frontend).
#: ``privacy_budget``: the node sent pilots only because the payload would exceed its budget.
TX_EVENT_KINDS: Final = ("late_burst", "underflow", "no_ack", "late_schedule", "tx_error",
                         "privacy_budget")


@dataclass(frozen=True)
class TxEvent:
    """Something that went wrong with the frame a node sent for round ``t``.

    ``kind``: one of :data:`TX_EVENT_KINDS`; ``detail``: the radio's words, for the AP's log.
    """

    t: int
    kind: str
    detail: str


@dataclass(frozen=True)
class Ready:
    """Node -> AP: the scalar for round ``t`` is computed and the node will transmit.

    ``digital_scalar`` is set only on the *digital* path (baseband mode, ideal-PHY loopback),
    where the scalar itself travels in the control plane; with a radio PHY it is ``None`` and
    the scalar is only ever sent over the air. ``compute_s``: seconds from ROUND to READY on
    the node (the AP subtracts it from its own ROUND -> READY time: the rest is the
    control-plane round trip); ``tx_prep_s``: seconds the node took, for its last frame, from
    SCHEDULE to handing the frame to its radio (0: none yet); ``tx_slack_s``: for its frame of
    round t - 1, the device seconds from the moment that frame was in its radio to the frame's
    time (negative: late; None: no frame in round t - 1); ``tx_events``: what went wrong with
    its frames since its last READY; ``spent_mu``: the Gaussian-DP mu the node's own privacy
    ledger has composed so far (None: privacy off), so that the AP plans no payload the node
    would refuse.
    """

    t: int
    node: int
    scalar_ready: bool
    digital_scalar: float | None
    compute_s: float = 0.0
    tx_prep_s: float = 0.0
    tx_events: tuple[TxEvent, ...] = ()
    tx_slack_s: float | None = None
    spent_mu: float | None = None


@dataclass(frozen=True)
class Update:
    """AP -> nodes: aggregate of round ``t``; apply theta <- theta - lr * g_hat * Z(seed).

    ``expected_hash`` (every ``hash_every`` rounds, else ``None``) is the model hash every
    node must hold after applying this update.
    """

    t: int
    seed: int
    g_hat: float
    lr: float
    active: tuple[int, ...]
    expected_hash: str | None


@dataclass(frozen=True)
class Leave:
    """Node -> AP: leaving cleanly."""

    node: int
    reason: str


@dataclass(frozen=True)
class RoundRecord:
    """One committed round, as stored in the round log and replayed in catch-up.

    ``g_hat``: aggregated scalar; ``active``: node ids in S_t; ``eta``: alignment gain;
    ``sigma_a``: artificial-noise std; ``mu``: realized Gaussian-DP mu_t of the round (None when
    not accounted); ``model_hash``: hash after this update (None when the AP keeps no replica);
    ``timestamp``: UNIX time of commit (s).
    """

    experiment: str
    t: int
    seed: int
    g_hat: float
    lr: float
    active: tuple[int, ...]
    eta: float
    sigma_a: float
    mu: float | None
    model_hash: str | None
    timestamp: float


@dataclass(frozen=True)
class CatchupRequest:
    """Node -> AP: send the committed records from round ``from_round`` on."""

    node: int
    from_round: int


@dataclass(frozen=True)
class CatchupResponse:
    """AP -> node: records ``from_round ..`` in order; ``more``: ask again for the rest."""

    node: int
    from_round: int
    records: tuple[RoundRecord, ...]
    more: bool
    next_round: int


@dataclass(frozen=True)
class Heartbeat:
    """Liveness, both directions. ``next_round``: sender's first round not applied/committed."""

    node: int
    next_round: int


@dataclass(frozen=True)
class ClockCheck:
    """AP -> node, after JOIN_ACK when the AP's radio has a device clock (USRPs, emulated or
    not): report your radio's device time now. ``nonce`` pairs the report with this check."""

    node: int
    nonce: int


@dataclass(frozen=True)
class ClockReport:
    """Node -> AP, answering CLOCK_CHECK ``nonce``: its radio's device time (s since the testbed
    epoch) and its host clock (Unix s, the clock that labelled its radio's PPS edge), read
    together on receipt of the check; both None when the node's radio has no device clock."""

    node: int
    nonce: int
    device_time: float | None
    host_time: float | None


@dataclass(frozen=True)
class Error:
    """Either direction: a request could not be served. ``code`` is machine-readable."""

    code: str
    detail: str


@dataclass(frozen=True)
class Calibrate:
    """AP -> one node (``pairzero calibrate``): set this calibration and send a pilot frame.

    ``iteration``: the calibration pass (0, 1, ...); ``apply``: set the values below first
    (false: measure with what the node runs now, ``--verify``); ``tx_gain_db``: analog TX gain
    (dB); ``digital_scale``: linear amplitude factor on the samples, (0, 1]; ``phase_rad``:
    rotation of the samples (rad); ``timing_advance_samples``: send this much early (samples);
    ``tx_sample``: the frame's start on the shared sample clock (the node sends preamble and
    pilot in its slot, no payload). Units as in :mod:`pairzero.phy.calibration_file`.
    """

    node: int
    iteration: int
    apply: bool
    tx_gain_db: float
    digital_scale: float
    phase_rad: float
    timing_advance_samples: float
    tx_sample: int


@dataclass(frozen=True)
class CalResult:
    """Node -> AP: what the node did with CALIBRATE ``iteration``: the calibration it now runs
    (``tx_gain_db`` as its radio really set it, which may round to the radio's step) and whether
    its frame went out (``sent``; ``detail``: why not, or the radio's events)."""

    node: int
    iteration: int
    tx_gain_db: float
    digital_scale: float
    phase_rad: float
    timing_advance_samples: float
    sent: bool
    detail: str


Body = (
    Join | JoinAck | JoinReject | Round | Schedule | Ready | Update | Leave | CatchupRequest
    | CatchupResponse | Heartbeat | Error | Calibrate | CalResult | ClockCheck | ClockReport
)

_BODY_OF: Final[dict[MsgType, type]] = {
    MsgType.JOIN: Join,
    MsgType.JOIN_ACK: JoinAck,
    MsgType.JOIN_REJECT: JoinReject,
    MsgType.ROUND: Round,
    MsgType.READY: Ready,
    MsgType.SCHEDULE: Schedule,
    MsgType.UPDATE: Update,
    MsgType.LEAVE: Leave,
    MsgType.CATCHUP_REQUEST: CatchupRequest,
    MsgType.CATCHUP_RESPONSE: CatchupResponse,
    MsgType.HEARTBEAT: Heartbeat,
    MsgType.ERROR: Error,
    MsgType.CALIBRATE: Calibrate,
    MsgType.CAL_RESULT: CalResult,
    MsgType.CLOCK_CHECK: ClockCheck,
    MsgType.CLOCK_REPORT: ClockReport,
}
_TYPE_OF: Final[dict[type, MsgType]] = {v: k for k, v in _BODY_OF.items()}

# Range checks applied after type checks: field name -> (min, max) inclusive.
_RANGES: Final[dict[str, tuple[float, float]]] = {
    "t": (0, MAX_INT),
    "seed": (0, MAX_INT),
    "next_round": (0, MAX_INT),
    "from_round": (0, MAX_INT),
    "hash_every": (0, MAX_INT),
    "node": (AP_NODE_ID, _MAX_NODES),
    "eta": (0.0, math.inf),
    "noise_std": (0.0, math.inf),
    "sigma_a": (0.0, math.inf),
    "tx_sample": (-1, MAX_INT),
    "deadline_s": (0.0, 86400.0),
    "compute_s": (0.0, 86400.0),
    "tx_prep_s": (0.0, 86400.0),
    "tx_slack_s": (-86400.0, 86400.0),
    "spent_mu": (0.0, 1e9),
    "nonce": (0, MAX_INT),
    "device_time": (-1e12, 1e12),
    "host_time": (0.0, 1e12),
    "lr": (0.0, math.inf),
    "mu": (0.0, math.inf),
    "noise_var": (0.0, math.inf),
    "clip": (0.0, math.inf),
    "epsilon": (0.0, math.inf),
    "delta": (0.0, 1.0),
    "rounds": (1, MAX_INT),
    "timestamp": (0.0, math.inf),
    "iteration": (0, 1 << 20),
    "tx_gain_db": (-200.0, 200.0),
    "digital_scale": (1e-12, 1.0),
    "timing_advance_samples": (-16.0, 16.0),  # pairzero.phy.calibration_file.MAX_TIMING_ADVANCE
}

# Allowed values of string fields: field name -> choices.
_CHOICES: Final[dict[str, tuple[str, ...]]] = {"kind": TX_EVENT_KINDS}


@dataclass(frozen=True)
class Message:
    """One control-plane message: envelope plus typed body."""

    experiment: str
    t: int
    body: Body
    version: int = PROTOCOL_VERSION

    @property
    def type(self) -> MsgType:
        """The wire type of the body."""
        return _TYPE_OF[type(self.body)]


def make(experiment: str, t: int, body: Body) -> Message:
    """Build a message, validating the body exactly as :func:`decode` would (ProtocolError)."""
    if type(body) not in _TYPE_OF:
        raise ProtocolError(f"body: {type(body).__name__} is not a message body type")
    msg = Message(experiment=experiment, t=t, body=body)
    # Round-trip through the validator so nothing invalid can be sent either.
    _check_envelope_values(experiment, t)
    _check_body(_from_plain(type(body), _to_plain(body), "body"), experiment)
    return msg


# ----------------------------------------------------------------------------- encoding


def _to_plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _to_plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple | list):
        return [_to_plain(x) for x in v]
    return v


def encode(msg: Message) -> bytes:
    """Serialize to compact UTF-8 JSON; non-finite floats raise ProtocolError."""
    obj = {
        "v": msg.version,
        "exp": msg.experiment,
        "t": msg.t,
        "type": str(msg.type),
        "body": _to_plain(msg.body),
    }
    try:
        data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError as e:
        raise ProtocolError(f"cannot encode {msg.type}: {e}") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"{msg.type}: encoded size {len(data)} B exceeds {MAX_MESSAGE_BYTES} B")
    return data


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"non-finite number {name} is not allowed")


def decode(data: bytes, experiment: str | None, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse and validate one message from the network.

    ``experiment``: the only experiment id accepted (``None`` accepts any, for tools).
    Raises ProtocolError naming the problem for anything that is not a valid message.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} B exceeds the limit of {max_bytes} B")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, int too long to convert
        raise ProtocolError(f"invalid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"top level must be an object, got {type(obj).__name__}")
    keys = set(obj)
    expected = {"v", "exp", "t", "type", "body"}
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise ProtocolError(f"envelope keys: missing {missing}, unknown {extra}")
    version = obj["v"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} not supported (this is {PROTOCOL_VERSION})")
    exp, t = obj["exp"], obj["t"]
    _check_envelope_values(exp, t)
    if experiment is not None and exp != experiment:
        raise ProtocolError(f"experiment id {exp!r} is not this experiment ({experiment!r})")
    try:
        mtype = MsgType(obj["type"])
    except (ValueError, TypeError):
        raise ProtocolError(f"unknown message type {obj['type']!r}") from None
    body = _from_plain(_BODY_OF[mtype], obj["body"], "body")
    _check_body(body, exp)
    return Message(experiment=exp, t=t, body=body, version=version)


def _check_body(body: Any, experiment: str) -> None:
    """Rules across fields of a body that the per-field checks cannot express."""
    node = getattr(body, "node", None)
    if isinstance(node, int) and node < 0 and not isinstance(body, Heartbeat):
        raise ProtocolError(f"body.node: {node} is the AP's id; only a HEARTBEAT carries it")
    if isinstance(body, Ready) and not body.scalar_ready and body.digital_scalar is not None:
        raise ProtocolError("body.digital_scalar: set although scalar_ready is false")
    if isinstance(body, Update | RoundRecord):
        _check_ascending("body.active", body.active)
    if isinstance(body, CatchupResponse):
        # (Contiguity from from_round is the node's to check: it asks again at once.)
        for i, rec in enumerate(body.records):
            if rec.experiment != experiment:
                raise ProtocolError(f"body.records[{i}].experiment: {rec.experiment!r:.80} is not "
                                    "this message's experiment")
            _check_ascending(f"body.records[{i}].active", rec.active)


def _check_ascending(key: str, ids: tuple[int, ...]) -> None:
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ProtocolError(f"{key}: node ids must be listed in ascending order")


def _check_envelope_values(exp: Any, t: Any) -> None:
    if not isinstance(exp, str) or not exp or len(exp) > 256:
        raise ProtocolError(f"exp: expected a non-empty string of <= 256 chars, got {exp!r:.80}")
    if type(t) is not int or not 0 <= t <= MAX_INT:
        raise ProtocolError(f"t: expected an integer in [0, 2^63), got {t!r:.80}")


def _from_plain(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from parsed JSON, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if set(data) != set(fields):
        missing, extra = sorted(set(fields) - set(data)), sorted(set(data) - set(fields))
        raise ProtocolError(f"{where} ({cls.__name__}): missing {missing}, unknown {extra}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _value(f"{where}.{name}", data[name], hints[name]) for name in fields}
    return cls(**kwargs)


def _value(key: str, v: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if v is None:
            return None
        (inner,) = args
        return _value(key, v, inner)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(v, list):
            raise ProtocolError(f"{key}: expected a list, got {type(v).__name__}")
        if len(v) > _MAX_NODES:
            raise ProtocolError(f"{key}: {len(v)} entries exceed {_MAX_NODES}")
        out = tuple(_value(f"{key}[{i}]", x, item_tp) for i, x in enumerate(v))
        if item_tp is int and len(set(out)) != len(out):
            raise ProtocolError(f"{key}: duplicate entries")
        return out
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_plain(tp, v, key)
    name = key.rsplit(".", 1)[-1].split("[")[0]
    if tp is bool:
        if type(v) is not bool:
            raise ProtocolError(f"{key}: expected true/false, got {v!r:.80}")
        return v
    if tp is int:
        if type(v) is not int:
            raise ProtocolError(f"{key}: expected an integer, got {v!r:.80}")
        lo, hi = _RANGES.get(name, (0, _MAX_NODES) if name == "active" else (-MAX_INT, MAX_INT))
        if not lo <= v <= hi:
            raise ProtocolError(f"{key}: {v} outside [{lo}, {hi}]")
        return v
    if tp is float:
        if type(v) not in (int, float):
            raise ProtocolError(f"{key}: expected a number, got {v!r:.80}")
        f = float(v)
        if not math.isfinite(f):
            raise ProtocolError(f"{key}: non-finite number {f!r}")
        lo, hi = _RANGES.get(name, (-math.inf, math.inf))
        if not lo <= f <= hi:
            raise ProtocolError(f"{key}: {f!r} outside [{lo}, {hi}]")
        return f
    if tp is str:
        if not isinstance(v, str):
            raise ProtocolError(f"{key}: expected a string, got {v!r:.80}")
        if len(v) > _MAX_STR:
            raise ProtocolError(f"{key}: string of {len(v)} chars exceeds {_MAX_STR}")
        if name in _CHOICES and v not in _CHOICES[name]:
            raise ProtocolError(f"{key}: {v!r:.80} is not one of {_CHOICES[name]}")
        return v
    raise TypeError(f"unsupported schema type {tp!r} at {key}")  # a bug in this module
