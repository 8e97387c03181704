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
