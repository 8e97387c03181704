"""Experiment configuration: one YAML file per experiment, typed and frozen.

Every component reads its own frozen dataclass (``ModelConfig``, ``ZOConfig``, ...); the
experiment YAML has one mapping per component, named as the attributes of
:class:`ExperimentConfig`. Loading validates everything where it enters:

* unknown keys are rejected, with the closest valid key suggested (``zo.learnig_rate`` ->
  ``did you mean 'zo.lr'?``);
* wrong types and values outside their range or their set of allowed values are rejected
  with a message naming the dotted key, the value and what is allowed;
* keys that are left out take the defaults below, so a YAML file lists only what it changes;
* a key given twice in one mapping is rejected with both line numbers (YAML parsers otherwise
  keep the last one silently);
* every value a process checks later has its bounds here, so a bad value fails at load naming
  its key, not minutes later inside a process (seeds and round numbers fit a signed 64-bit
  integer: SQLite and the control plane's limit; READY deadlines fit the protocol's day).

The resolved configuration (defaults filled in) is written next to every result by
:func:`dump_config`.

Ranges are attached to fields with :func:`_f` and checked by one generic validator, so a new
field needs one line here and nothing elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "apply_overrides",
    "parse_yaml",
    "DEFAULT_CONFIG_PATH",
    "MAX_SEED",
    "MAX_ROUNDS",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "loopback.yaml"

#: Largest seed: seeds travel in messages and the round log as signed 64-bit integers.
MAX_SEED = (1 << 63) - 1
#: Largest ``run.rounds``. A round costs at least a control-plane round trip and two forward
#: passes (milliseconds at best), and the round log and metrics grow by about 1 kB per round:
#: 10^9 rounds is a terabyte of log and, even at 1 ms a round, 11 days; more is a typo
#: (``1e30``), and it also keeps every round number far below the 2^63 the protocol allows.
MAX_ROUNDS = 10**9
#: Longest READY deadline (s): the protocol's ROUND.deadline_s limit.
MAX_DEADLINE_S = 86400.0
#: Rounds a node sends pilots only, after it (re)joins a loopback run (pairzero.phy.round; one on
#: radios that share a reference):
#: no node is present in them while every node warms up.
PILOT_ONLY_ROUNDS = 2
#: With privacy on, up to two more: a node is precoded once the bound on its precoding error,
#: from the errors measured between its frames, is tight enough or rests on three of them
#: (pairzero.ota.charging.MAX_PLANNING_BOUND, HOLD_BACK_ERRORS: one frame more as a rule, two
#: on a channel that changes by several per cent between frames).
PRIVATE_PILOT_ONLY_ROUNDS = PILOT_ONLY_ROUNDS + 2


class ConfigError(ValueError):
    """An experiment configuration is invalid; the message names the key and what is allowed."""


def _f(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with an allowed numeric range (inclusive ge/le, exclusive gt/lt)."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- components


@dataclass(frozen=True)
class RunConfig:
    """Identity and budget of one experiment."""

    name: str = "pairzero"
    seed: int = _f(0, ge=0, le=MAX_SEED, doc="master seed: data split, channel draws, round seeds")
    rounds: int = _f(100, ge=1, le=MAX_ROUNDS, doc="federated rounds T (at most 10^9: see MAX_ROUNDS)")
    method: Literal["pairzero", "zo_noiseless", "zo_digital", "fo_fedavg"] = "pairzero"
    fo_lr: float = _f(1e-3, gt=0.0, doc="SGD learning rate of the fo_fedavg baseline")


@dataclass(frozen=True)
class ModelConfig:
    """Which causal LM to fine-tune.

    ``name`` is an embedded offline model (``opt-tiny``, ``opt-125m``), a local directory
    saved with ``save_pretrained``, or a Hugging Face hub id such as ``facebook/opt-125m``.
    """

    name: str = "opt-tiny"
    trainable: Literal["all", "bias", "layernorm", "bias_layernorm", "head", "final_norm"] = "all"
    revision: str | None = None


@dataclass(frozen=True)
class TaskConfig:
    """Prompt-based classification (MeZO style) or plain LM loss."""

    name: str = "builtin-sentiment"
    kind: Literal["classification", "lm"] = "classification"
    template: str = "{sentence} It was"
    verbalizer: tuple[str, ...] = (" terrible", " great")
    max_length: int = _f(64, ge=4, le=4096, doc="tokens per example")
    batch_size: int = _f(16, ge=1, le=1 << 20, doc="examples per node per round")
    micro_batch_size: int = _f(0, ge=0, le=1 << 20, doc="examples per forward pass inside one loss (0: the whole batch at once); the loss is still the mean over task.batch_size examples, activations memory scales with this")
    eval_examples: int = _f(200, ge=1, le=1 << 30)
    eval_every: int = _f(10, ge=1, le=MAX_ROUNDS, doc="rounds between evaluations")
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = _f(0.5, gt=0.0)


@dataclass(frozen=True)
class ZOConfig:
    """Two-point SPSA (MeZO) hyper-parameters."""

    epsilon: float = _f(1e-3, gt=0.0, le=1.0, doc="perturbation scale")
    lr: float = _f(1e-4, gt=0.0, doc="learning rate")
    perturbation: Literal["gaussian", "rademacher"] = "gaussian"
    num_perturbations: int = _f(1, ge=1, le=64, doc="q perturbations per round")
    clip: float = _f(50.0, gt=0.0, doc="clip bound G on each node's scalar")
    clip_quantile: float | None = _f(None, gt=0.0, lt=1.0, doc="set G before round 0 to this quantile of |g| on the AP's validation split (pairzero.clip_bound); null: zo.clip as given")
    clip_warmup_draws: int = _f(64, ge=4, le=4096, doc="perturbation draws of the clip warm-up (zo.clip_quantile)")
    weight_decay: float = _f(0.0, ge=0.0)
    threads: int = _f(0, ge=0, le=64, doc="threads generating z (0: usable CPUs, at most 8); speed only, never the bits")
    overlap: bool = _f(True, doc="apply the +εz and -2εz sweeps on background threads while the forward pass runs, layer by layer (speed only, never the bits)")


@dataclass(frozen=True)
class NodesConfig:
    """The K edge devices."""

    count: int = _f(3, ge=1, le=1024, doc="number of edge nodes K")
    power_budget: float = _f(1.0, gt=0.0, doc="per-node transmit power budget P_k (linear)")
    min_distance_m: float = _f(10.0, gt=0.0)
    max_distance_m: float = _f(100.0, gt=0.0)
    distances_m: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ChannelConfig:
    """Wireless channel between the nodes and the AP (simulated, or emulated in loopback)."""

    fading: Literal["none", "rayleigh", "rician"] = "rayleigh"
    rician_k_db: float = 6.0
    snr_db: float = _f(10.0, ge=-30.0, le=80.0, doc="receive SNR at the AP for unit received amplitude")
    path_loss_exponent: float = _f(0.0, ge=0.0, le=6.0)
    reference_distance_m: float = _f(10.0, gt=0.0)
    estimation_error_std: float = _f(0.0, ge=0.0, lt=1.0, doc="relative channel-estimate error")
    truncation_threshold: float = _f(0.0, ge=0.0, doc="g_th on |h_k|^2")
    max_delay_samples: float = _f(4.0, ge=0.0, doc="loopback emulator: max |delay| (samples)")
    max_cfo: float = _f(1e-4, ge=0.0, lt=0.5, doc="loopback emulator: max |CFO| (cycles/sample)")
    fading_doppler: float = _f(0.0, ge=0.0, lt=0.5, doc="loopback emulator: time-varying Rayleigh fading, normalised Doppler (cycles/sample); 0 = block fading")
    random_phase: bool = True


@dataclass(frozen=True)
class PrivacyConfig:
    """(epsilon, delta)-DP per node over all rounds, against the AP."""

    enabled: bool = True
    epsilon: float = _f(8.0, gt=0.0)
    delta: float = _f(1e-5, gt=0.0, lt=1.0)
    eta_floor: float = _f(0.0, ge=0.0, doc="minimum alignment gain (hardware/sync floor)")
    max_artificial_noise_std: float | None = _f(
        None, ge=0.0, doc="artificial-noise std per real dimension available (null: unlimited)"
    )
    error_tail_prob: float = _f(
        1e-6, gt=0.0, lt=1.0, doc="per node-round probability the channel-error bound fails"
    )


@dataclass(frozen=True)
class OTAConfig:
    """Over-the-air aggregation."""

    scheme: Literal["analog", "one_bit"] = "analog"


@dataclass(frozen=True)
class PhyConfig:
    """Baseband burst: ZC preamble, per-node pilots (TDMA), guard, repeated payload."""

    sample_rate: float = _f(1e6, gt=0.0, doc="samples/s")
    samples_per_symbol: int = _f(4, ge=1)
    preamble_length: int = _f(63, ge=7, doc="Zadoff-Chu length (odd prime preferred)")
    zc_root: int = _f(25, ge=1)
    pilot_length: int = _f(255, ge=7, doc="pilot symbols per node slot (QPSK)")
    guard_samples: int = _f(32, ge=0)
    payload_repetitions: int = _f(8, ge=1, doc="payload symbols carrying the one scalar")
    rolloff: float = _f(0.35, ge=0.0, le=1.0)
    throttle: bool = False
    pilot_seed: int = _f(7, ge=0, le=MAX_SEED, doc="seed of the pseudo-random QPSK pilot sequence")
    rrc_span: int = _f(8, ge=2, le=64, doc="root-raised-cosine pulse length (symbols, even)")
    payload_spreading: bool = False
    max_timing_offset: float = _f(8.0, ge=0.0, le=78.0, doc="RX search range for per-node delay (samples; at most 78: the capture margins must keep noise-only samples)")
    max_cfo: float = _f(2e-4, ge=0.0, lt=0.5, doc="RX search range for CFO (cycles/sample)")
    detection_pfa: float = _f(1e-3, gt=0.0, lt=1.0, doc="burst false-alarm probability per window")
    presence_pfa: float = _f(1e-3, gt=0.0, lt=1.0, doc="P(absent node declared present)")


@dataclass(frozen=True)
class NetworkConfig:
    """Control plane (ZeroMQ)."""

    ap_host: str = "127.0.0.1"
    control_port: int = _f(5550, ge=1, le=65535)
    sample_port_base: int = _f(5600, ge=1, le=65535)
    ready_timeout_s: float = _f(30.0, gt=0.0, le=MAX_DEADLINE_S, doc="READY deadline of a round (s; the protocol's limit is a day)")
    heartbeat_s: float = _f(2.0, gt=0.0, le=3600.0, doc="heartbeat interval (s); 3 silent ones = gone")
    curve: bool = True
    keys_dir: str = "keys"
    hash_every: int = _f(10, ge=0, le=MAX_ROUNDS, doc="rounds between model-hash checks in UPDATE (0: never)")
    start_timeout_s: float = _f(60.0, ge=0.0, le=1e7, doc="AP wait for all nodes before round 0 (s)")
    ap_give_up_s: float = _f(600.0, ge=0.0, le=1e7, doc="edge node exits when the AP is silent this long (s; 0: never)")
    max_empty_rounds: int = _f(5, ge=0, le=MAX_ROUNDS, doc="consecutive rounds with no node present (dead channel) that stop the run with status 1 (0: never; radio modes: >= 3, a node's first 2 rounds carry pilots only; >= 5 with privacy on, up to 4 then)")


@dataclass(frozen=True)
class RadioConfig:
    """Where the samples go.

    ``loopback``: GNU Radio flowgraphs on this machine, the channel emulator between nodes and
    AP; ``usrp``: USRPs (UHD device args; ``type=emulated`` for the emulated USRP, which runs
    the USRP code against the channel emulator); ``baseband``: no samples at all, the scalars
    travel in the control plane and the AP applies the simulated channel (as ``simulate`` does).
    """

    mode: Literal["loopback", "baseband", "usrp"] = "loopback"
    ap_args: str = ""
    node_args: tuple[str, ...] = ()
    center_freq_hz: float = _f(915e6, gt=0.0)
    tx_gain_db: float = _f(40.0, ge=0.0, le=90.0)
    rx_gain_db: float = _f(30.0, ge=0.0, le=90.0)
    clock_source: Literal["internal", "external", "gpsdo"] = "external"
    tx_antenna: str = _f("TX/RX", doc="the nodes' transmit port (a B2xx / UBX transmits only on TX/RX; `pairzero doctor` lists a device's ports)")
    rx_antenna: str = _f("RX2", doc="the AP's receive port (TX/RX or RX2 on a B2xx / UBX)")
    calibration_file: str | None = _f(None, doc="calibration file (pairzero.phy.calibration_file) the nodes apply at start (TX gain, digital scale and phase, timing advance) and the AP checks; `pairzero calibrate` writes it; null: uncalibrated (every node at radio.tx_gain_db)")
    calibration_max_age_h: float = _f(24.0, ge=0.0, le=1e6, doc="warn at start when radio.calibration_file is older than this (hours; 0: never)")
    tx_lead_s: float = _f(0.005, ge=0.0, le=10.0, doc="radios: a frame's time is this far (s) beyond the worst SCHEDULE-to-radio latency measured in the last 20 rounds")
    capture_slack_s: float = _f(1.0, gt=0.0, le=600.0, doc="radios: the AP gives up on a window this long (s) after it is due")
    emulated_rate_factor: float = _f(1.0, gt=0.0, le=1.0, doc="type=emulated radios: their clocks run at this fraction of real time (lower on a loaded machine)")

    def emulated(self) -> bool:
        """Every radio of a ``usrp`` run is an emulated USRP (``type=emulated`` device args)."""
        args = [self.ap_args, *self.node_args]
        return self.mode == "usrp" and all(_device_type(a) == "emulated" for a in args)

    def emulator_host(self) -> str:
        """Where the channel emulator's sample ports are, as every radio sees them: the
        ``emulator=HOST`` device arg of emulated radios (the host running ``pairzero channel``,
        as a networked USRP has ``addr=``); 127.0.0.1 without one, and in loopback."""
        if not self.emulated():
            return LOCAL_EMULATOR_HOST
        # The config check refuses radios naming different hosts; the AP's radio decides.
        return _device_arg(self.ap_args, "emulator") or LOCAL_EMULATOR_HOST

    def emulator_is_local(self) -> bool:
        """The channel emulator runs on this host, started by the launcher that needs it
        (``pairzero loopback`` / ``calibrate``); otherwise ``pairzero channel`` runs on
        :meth:`emulator_host` and the processes here treat the radios as a lab's."""
        return self.emulator_host() in ("127.0.0.1", "localhost")


#: The channel emulator's host when no emulated radio names one (``emulator=`` device arg).
LOCAL_EMULATOR_HOST = "127.0.0.1"


def _device_arg(args: str, key: str) -> str:
    """The value of ``key`` in UHD device args (``"type=b200,serial=..."``, ``"type"`` ->
    ``"b200"``; "" if absent)."""
    for part in args.split(","):
        k, _, v = part.partition("=")
        if k.strip().lower() == key:
            return v.strip()
    return ""


def _device_type(args: str) -> str:
    """The ``type`` of UHD device args (``"type=b200,serial=..."`` -> ``"b200"``; "" if none)."""
    return _device_arg(args, "type")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go."""

    dir: str = "runs"
    plots: bool = True
    log_every: int = _f(1, ge=1, le=MAX_ROUNDS, doc="rounds between progress lines")


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment; one attribute per YAML section."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    zo: ZOConfig = field(default_factory=ZOConfig)
    nodes: NodesConfig = field(default_factory=NodesConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    ota: OTAConfig = field(default_factory=OTAConfig)
    phy: PhyConfig = field(default_factory=PhyConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    radio: RadioConfig = field(default_factory=RadioConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML value to ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{key}: {value!r} is not allowed; allowed values: "
                + ", ".join(repr(a) for a in allowed)
                + hint
            )
        return value
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if isinstance(value, float) or (isinstance(value, str) and _is_number(value)):
                hint = " (a number in float notation; write the integer itself)"
            raise ConfigError(f"{key}: expected an integer, got {value!r}{hint}")
        return value
    if tp is float:
        # PyYAML (YAML 1.1) reads `1e-4` as a string; accept any numeric spelling.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_range(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if value is None or not isinstance(value, int | float) or isinstance(value, bool):
        return
    bounds = []
    ok = True
    if meta.get("ge") is not None:
        bounds.append(f">= {meta['ge']}")
        ok &= value >= meta["ge"]
    if meta.get("gt") is not None:
        bounds.append(f"> {meta['gt']}")
        ok &= value > meta["gt"]
    if meta.get("le") is not None:
        bounds.append(f"<= {meta['le']}")
        ok &= value <= meta["le"]
    if meta.get("lt") is not None:
        bounds.append(f"< {meta['lt']}")
        ok &= value < meta["lt"]
    if not ok:
        doc = f" ({meta['doc']})" if meta.get("doc") else ""
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: {' and '.join(bounds)}{doc}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{dotted}'{hint} (allowed in {prefix or 'the top level'}: "
                + ", ".join(fields)
                + ")"
            )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], dotted)
        else:
            value = _coerce(dotted, data[name], tp)
            _check_range(dotted, value, f.metadata)
            if isinstance(value, tuple):
                for i, v in enumerate(value):
                    _check_range(f"{dotted}[{i}]", v, f.metadata)
            kwargs[name] = value
    return cls(**kwargs)


def _cross_checks(cfg: ExperimentConfig) -> None:
    n = cfg.nodes
    if n.min_distance_m > n.max_distance_m:
        raise ConfigError(
            f"nodes.min_distance_m ({n.min_distance_m}) must not exceed nodes.max_distance_m "
            f"({n.max_distance_m})"
        )
    if n.distances_m is not None:
        if len(n.distances_m) != n.count:
            raise ConfigError(
                f"nodes.distances_m has {len(n.distances_m)} entries; it needs one per node "
                f"(nodes.count = {n.count})"
            )
        if any(d <= 0 for d in n.distances_m):
            raise ConfigError(f"nodes.distances_m: every distance must be > 0, got {n.distances_m}")
    if cfg.task.micro_batch_size > cfg.task.batch_size:
        raise ConfigError(
            f"task.micro_batch_size: {cfg.task.micro_batch_size} exceeds task.batch_size "
            f"({cfg.task.batch_size}); allowed: 0 (the whole batch in one forward pass) or "
            f"1..{cfg.task.batch_size}"
        )
    if cfg.task.kind == "classification" and len(cfg.task.verbalizer) < 2:
        raise ConfigError(
            f"task.verbalizer: classification needs at least 2 label words, got {cfg.task.verbalizer!r}"
        )
    if cfg.task.kind == "classification" and "{sentence}" not in cfg.task.template:
        raise ConfigError(
            f"task.template: must contain the placeholder '{{sentence}}', got {cfg.task.template!r}"
        )
    if cfg.radio.mode == "usrp" and cfg.radio.clock_source == "internal":
        raise ConfigError(
            "radio.clock_source: 'internal' cannot work with radio.mode 'usrp': over-the-air "
            "aggregation needs the nodes and the AP on one time base; use 'external' "
            "(shared 10 MHz + PPS) or 'gpsdo'"
        )
    if cfg.radio.mode == "usrp" and cfg.radio.node_args and len(cfg.radio.node_args) != n.count:
        raise ConfigError(
            f"radio.node_args has {len(cfg.radio.node_args)} entries; it needs one per node "
            f"(nodes.count = {n.count})"
        )
    if cfg.radio.mode == "usrp":
        kinds = {_device_type(a) == "emulated" for a in [cfg.radio.ap_args, *cfg.radio.node_args]}
        if kinds == {True, False}:
            raise ConfigError(
                "radio.ap_args / radio.node_args: either every radio is emulated (type=emulated) "
                "or none is: an emulated radio only reaches the channel emulator"
            )
        if cfg.radio.emulated():
            hosts = {a: _device_arg(a, "emulator") for a in [cfg.radio.ap_args, *cfg.radio.node_args]}
            if len(set(hosts.values())) > 1:
                raise ConfigError(
                    f"radio.ap_args / radio.node_args: the emulated radios name different channel "
                    f"emulators (emulator=): {hosts}; one `pairzero channel` plays every radio's RF, "
                    "so give every radio the same emulator=HOST (or none: 127.0.0.1)")
    warmup = PRIVATE_PILOT_ONLY_ROUNDS if cfg.privacy.enabled else PILOT_ONLY_ROUNDS
    if cfg.radio.mode != "baseband" and 0 < cfg.network.max_empty_rounds <= warmup:
        raise ConfigError(
            f"network.max_empty_rounds: {cfg.network.max_empty_rounds} would stop a radio run "
            f"during its start: a node's first {warmup} rounds carry pilots only"
            f"{' (with privacy on)' if cfg.privacy.enabled else ''}, so they have no node "
            f"present; use at least {warmup + 1} (or 0: never stop)"
        )
    if cfg.network.sample_port_base + n.count > 65535:
        raise ConfigError(
            f"network.sample_port_base ({cfg.network.sample_port_base}) leaves no room for the "
            f"{n.count + 1} sample ports (one per node and the AP's) below 65536"
        )
    if cfg.network.sample_port_base <= cfg.network.control_port <= cfg.network.sample_port_base + n.count + 1:
        raise ConfigError(
            f"network.control_port ({cfg.network.control_port}) collides with the sample ports "
            f"{cfg.network.sample_port_base}..{cfg.network.sample_port_base + n.count + 1}"
        )


def config_from_dict(data: Any) -> ExperimentConfig:
    """Validate a parsed YAML mapping and return the frozen experiment config."""
    cfg = _build(ExperimentConfig, data, "")
    _cross_checks(cfg)
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (PyYAML keeps the last
    one silently): the error names the dotted key and both lines."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_duplicate_keys(node, "")
        return super().construct_document(node)


def _check_duplicate_keys(node: yaml.Node, prefix: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` overrides by design
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else str(key)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"duplicate key '{dotted}' at lines {seen[key]} and {line}")
            seen[key] = line
            _check_duplicate_keys(value_node, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{prefix}[{i}]")


def parse_yaml(text: str) -> Any:
    """Parse YAML as the config loader does (safe, duplicate keys refused with ConfigError)."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load, override (``section.key=value``) and validate an experiment YAML file."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = parse_yaml(p.read_text()) or {}
    except ConfigError as e:
        raise ConfigError(f"config file {str(p)!r}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    data = apply_overrides(data, overrides)
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def apply_overrides(data: Any, overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b=value`` overrides applied (value parsed as YAML)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {data!r}")
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected section.key=value")
        section, name = parts
        sub = out.setdefault(section, {})
        if sub is None:  # an empty section in the YAML
            sub = out[section] = {}
        if not isinstance(sub, dict):
            raise ConfigError(f"override {item!r}: '{section}' is not a section")
        try:
            sub[name] = parse_yaml(raw)
        except ConfigError as e:
            raise ConfigError(f"override {item!r}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: not a valid YAML value: {e}") from None
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of a config, for YAML/JSON output."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def dump_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config (every default filled in) as YAML."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return p
