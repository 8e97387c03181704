"""Learning and real-model points are keyed on the config sections their kind reads: a new
network or radio value leaves a simulate point's key (and its result file) as it is, and
reruns a loopback point, which reads them."""

from __future__ import annotations

from pairzero.config import load_config
from pairzero.results.experiments import PRESETS, config_point, plan, point_config
from pairzero.runinfo import REPO_ROOT


def _cfg(*overrides: str):
    return load_config(REPO_ROOT / "configs" / "topic.yaml", ["output.plots=false", *overrides])


def test_simulate_key_ignores_network_radio_and_output() -> None:
    base = config_point("learning", "p", "curves", "simulate", _cfg())
    for change in ("network.control_port=6123", "radio.tx_gain_db=3.5", "output.dir=elsewhere"):
        assert config_point("learning", "p", "curves", "simulate", _cfg(change)).key == base.key, change
    assert config_point("learning", "p", "curves", "simulate", _cfg("zo.lr=0.5")).key != base.key
    assert config_point("learning", "p", "curves", "simulate", _cfg("channel.snr_db=3")).key != base.key
    # The ZO methods do not read the FO baseline's rate, nor the FO baseline the ZO rate.
    assert config_point("learning", "p", "curves", "simulate", _cfg("run.fo_lr=0.5")).key == base.key
    fo = config_point("learning", "p", "curves", "simulate", _cfg("run.method=fo_fedavg"))
    assert config_point("learning", "p", "curves", "simulate", _cfg("run.method=fo_fedavg", "run.fo_lr=0.5")).key != fo.key
    assert config_point("learning", "p", "curves", "simulate", _cfg("run.method=fo_fedavg", "zo.lr=0.5")).key == fo.key


def test_loopback_key_follows_network_and_radio() -> None:
    base = config_point("learning", "p", "curves", "loopback", _cfg())
    assert config_point("learning", "p", "curves", "loopback", _cfg("network.control_port=6123")).key != base.key
    assert config_point("learning", "p", "curves", "loopback", _cfg("output.dir=elsewhere")).key == base.key


def test_zero_shot_key_reads_model_prompt_validation_and_seed_only() -> None:
    base = config_point("real_sweep", "z", "prompt", "zeroshot", _cfg())
    unread = ("zo.lr=0.5", "nodes.count=7", "task.batch_size=2", "task.eval_every=3")
    assert config_point("real_sweep", "z", "prompt", "zeroshot", _cfg(*unread)).key == base.key
    assert config_point("real_sweep", "z", "prompt", "zeroshot", _cfg("task.template=\"{sentence} So\"")).key != base.key
    assert config_point("real_sweep", "z", "prompt", "zeroshot", _cfg("run.seed=9")).key != base.key


def test_a_point_runs_its_whole_config() -> None:
    cfg = _cfg("network.control_port=6123")
    assert point_config(config_point("learning", "p", "curves", "simulate", cfg)) == cfg


def test_planned_learning_points_carry_only_what_they_read() -> None:
    for p in plan(PRESETS["tiny"]):
        if p.section == "learning" and p.params["kind"] == "simulate":
            assert not {"network", "radio", "output"} & set(p.params["config"])
            assert {"network", "radio"} <= set(p.run_with["config"])


def test_how_a_point_is_computed_is_not_part_of_its_key() -> None:
    # overlapped z sweeps (same bits) and micro-batched forwards (same loss within the stated
    # tolerance) change how a point is computed, not what: its stored result still holds
    for kind in ("simulate", "loopback"):
        base = config_point("learning", "p", "curves", kind, _cfg())
        how = _cfg("zo.overlap=false", "task.micro_batch_size=2")
        assert config_point("learning", "p", "curves", kind, how).key == base.key, kind
        assert config_point("learning", "p", "curves", kind, _cfg("task.batch_size=2")).key != base.key
