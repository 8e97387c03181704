"""The experiment config: valid files load; each kind of bad input gets its own clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pairzero.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)


def test_loopback_default_values_come_from_the_yaml() -> None:
    cfg = load_config(REPO / "configs" / "loopback.yaml")
    raw = yaml.safe_load((REPO / "configs" / "loopback.yaml").read_text())
    assert cfg.run.seed == raw["run"]["seed"]
    assert cfg.nodes.count == raw["nodes"]["count"]
    assert cfg.radio.mode == "loopback"


def test_missing_keys_take_defaults_and_config_is_frozen() -> None:
    cfg = config_from_dict({"zo": {"lr": 0.5}})
    assert cfg.zo.lr == 0.5
    assert cfg.zo.epsilon == ExperimentConfig().zo.epsilon
    with pytest.raises(AttributeError):
        cfg.zo.lr = 1.0  # type: ignore[misc]


def test_yaml_exponent_without_dot_is_a_number() -> None:
    # PyYAML reads `1e-4` as a string; the loader must still take it as a float.
    cfg = config_from_dict(yaml.safe_load("zo:\n  lr: 1e-4\n"))
    assert cfg.zo.lr == pytest.approx(1e-4)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "loopback.yaml", ["zo.lr=0.25", "nodes.count=5"])
    out = dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(out)
    assert again == cfg
    assert config_to_dict(again)["nodes"]["count"] == 5


BAD_INPUTS = [
    # (data, fragments that the message must contain)
    ({"zo": {"learnig_rate": 1}}, ["unknown key 'zo.learnig_rate'"]),
    ({"zo": {"lrr": 1}}, ["unknown key 'zo.lrr'", "did you mean 'zo.lr'"]),
    ({"chanel": {}}, ["unknown key 'chanel'", "did you mean 'channel'"]),
    ({"zo": {"lr": "fast"}}, ["zo.lr", "'fast'", "expected a number"]),
    ({"nodes": {"count": 2.5}}, ["nodes.count", "2.5", "expected an integer"]),
    ({"nodes": {"count": True}}, ["nodes.count", "expected an integer"]),
    ({"nodes": {"count": 0}}, ["nodes.count", "out of range", ">= 1"]),
    ({"zo": {"lr": -1.0}}, ["zo.lr", "-1.0", "> 0.0"]),
    ({"privacy": {"delta": 1.0}}, ["privacy.delta", "out of range", "< 1.0"]),
    ({"privacy": {"epsilon": 0}}, ["privacy.epsilon", "> 0.0"]),
    ({"zo": {"perturbation": "gausian"}}, ["zo.perturbation", "'gausian'", "'gaussian'", "'rademacher'"]),
    ({"channel": {"fading": "nakagami"}}, ["channel.fading", "allowed values", "'rayleigh'"]),
    ({"privacy": {"enabled": "yes please"}}, ["privacy.enabled", "true/false"]),
    ({"task": {"verbalizer": " great"}}, ["task.verbalizer", "expected a list"]),
    ({"task": {"verbalizer": [" great"]}}, ["task.verbalizer", "at least 2"]),
    ({"task": {"template": "It was"}}, ["task.template", "{sentence}"]),
    ({"nodes": {"count": 3, "distances_m": [10.0, 20.0]}}, ["nodes.distances_m", "one per node"]),
    ({"nodes": {"min_distance_m": 50.0, "max_distance_m": 10.0}}, ["nodes.min_distance_m"]),
    ({"network": {"control_port": 70000}}, ["network.control_port", "<= 65535"]),
    ({"zo": {"epsilon": float("nan")}}, ["zo.epsilon", "finite"]),
    ({"zo": 3}, ["zo", "expected a mapping"]),
    ({"zo": {"overlap": "sometimes"}}, ["zo.overlap", "true/false"]),
    ({"task": {"micro_batch_size": -1}}, ["task.micro_batch_size", "out of range", ">= 0"]),
    ({"task": {"batch_size": 8, "micro_batch_size": 9}}, ["task.micro_batch_size", "task.batch_size", "0 (the whole batch", "1..8"]),
    ({"radio": {"mode": "usrp", "clock_source": "internal"}}, ["radio.clock_source", "'external'"]),
]


@pytest.mark.parametrize("data, fragments", BAD_INPUTS, ids=[str(d) for d, _ in BAD_INPUTS])
def test_bad_input_gets_a_specific_error(data: dict, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    for frag in fragments:
        assert frag in str(info.value), f"{frag!r} not in {info.value!s}"


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("zo:\n  clip: -3\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*zo\.clip"):
        load_config(p)


def test_overrides_parse_yaml_values_and_reject_malformed() -> None:
    out = apply_overrides({"zo": {"lr": 1.0}}, ["zo.lr=0.5", "privacy.enabled=false"])
    assert out == {"zo": {"lr": 0.5}, "privacy": {"enabled": False}}
    for bad in ["zo.lr", "lr=1", "a.b.c=1"]:
        with pytest.raises(ConfigError, match="section.key=value"):
            apply_overrides({}, [bad])


# --- bounds for every value a process checks later; integers written as floats; duplicates

LATE_FAILURES = [
    # (override, fragments): each passed load before and failed later inside a process, or
    # was accepted although nothing could run it
    ("run.seed=9223372036854775808", ["run.seed", "<= 9223372036854775807"]),
    ("run.seed=99999999999999999999999", ["run.seed", "out of range"]),
    ("run.rounds=1000000000000000000000000000000", ["run.rounds", "<= 1000000000"]),
    ("run.rounds=1e30", ["run.rounds", "expected an integer", "'1e30'", "float notation"]),
    ("run.rounds=1.0e+30", ["run.rounds", "expected an integer", "float notation"]),
    ("nodes.count=3.0", ["nodes.count", "expected an integer", "float notation"]),
    ("network.control_port=5.55e3", ["network.control_port", "expected an integer"]),
    ("network.ready_timeout_s=1e9", ["network.ready_timeout_s", "<= 86400.0"]),
    ("network.heartbeat_s=1e300", ["network.heartbeat_s", "<= 3600.0"]),
    ("network.hash_every=10000000000", ["network.hash_every", "<= 1000000000"]),
    ("network.max_empty_rounds=-1", ["network.max_empty_rounds", ">= 0"]),
    # the loopback radio's first 2 rounds carry pilots only (up to 4 with privacy on, the
    # default): 4 would stop a private run at its start
    ("network.max_empty_rounds=4", ["network.max_empty_rounds", "pilots only", "with privacy on",
                                    "at least 5"]),
    ("network.sample_port_base=65534", ["network.sample_port_base", "below 65536"]),
    ("phy.pilot_seed=9223372036854775808", ["phy.pilot_seed", "out of range"]),
    ("task.batch_size=100000000000", ["task.batch_size", "out of range"]),
]


@pytest.mark.parametrize("override, fragments", LATE_FAILURES, ids=[o for o, _ in LATE_FAILURES])
def test_value_a_process_would_refuse_later_is_refused_at_load(
        override: str, fragments: list[str]) -> None:
    # Execute / Assert: one ConfigError naming the key
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "configs" / "loopback.yaml", [override])
    for frag in fragments:
        assert frag in str(info.value), f"{frag!r} not in {info.value!s}"


def test_largest_allowed_seed_and_rounds_load() -> None:
    cfg = load_config(REPO / "configs" / "loopback.yaml",
                      [f"run.seed={2**63 - 1}", "run.rounds=1000000000", "network.max_empty_rounds=0"])
    assert (cfg.run.seed, cfg.run.rounds, cfg.network.max_empty_rounds) == (2**63 - 1, 10**9, 0)


def test_default_max_empty_rounds_is_five() -> None:
    assert config_from_dict({}).network.max_empty_rounds == 5


def test_baseband_may_stop_after_one_empty_round() -> None:
    cfg = config_from_dict({"radio": {"mode": "baseband"}, "network": {"max_empty_rounds": 1}})
    assert cfg.network.max_empty_rounds == 1


def test_duplicate_key_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    # Prepare: run.rounds twice (PyYAML alone would silently keep 7)
    p = tmp_path / "dup.yaml"
    p.write_text("run:\n  rounds: 5\n  seed: 1\n  rounds: 7\nzo:\n  lr: 0.1\n")
    # Execute / Assert
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "dup.yaml" in msg and "duplicate key 'run.rounds' at lines 2 and 4" in msg


def test_duplicate_section_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("zo:\n  lr: 0.1\nnodes:\n  count: 2\nzo:\n  clip: 1.0\n")
    with pytest.raises(ConfigError, match="duplicate key 'zo' at lines 1 and 5"):
        load_config(p)


def test_duplicate_key_in_an_override_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'a' at lines 1 and 1"):
        apply_overrides({}, ["task.verbalizer={a: 1, a: 2}"])


def test_same_key_in_different_sections_and_merge_keys_are_fine(tmp_path: Path) -> None:
    p = tmp_path / "ok.yaml"
    p.write_text("run:\n  seed: 3\nphy:\n  pilot_seed: 3\n"
                 "channel:\n  <<: {snr_db: 5.0, fading: none}\n  snr_db: 7.0\n")
    cfg = load_config(p)
    assert (cfg.run.seed, cfg.phy.pilot_seed) == (3, 3)
    assert (cfg.channel.snr_db, cfg.channel.fading) == (7.0, "none")  # explicit key wins
