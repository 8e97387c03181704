"""`pairzero simulate` runs the testbed's round code (orchestrator + edge nodes over the
in-process transport and the simulated PHY) on one shared model copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from access_point.roundlog import RoundLog
from pairzero.config import ExperimentConfig, load_config
from pairzero.metrics import round_rows
from pairzero.phy.simulated import SimulatedAir, SimulatedApPhy, SimulatedNodePhy
from pairzero.protocol.interfaces import RoundPlan
from pairzero.runinfo import experiment_id
from pairzero.seeds import round_seed
from pairzero.trainer import SharedWeights, ZOTrainer
from simulation import run as sim_run
from simulation.run import run_simulation

BASE = ["output.plots=false", "nodes.count=3", "run.rounds=4", "task.eval_every=2",
        "task.eval_examples=16"]


def test_every_round_is_committed_to_the_round_log_by_the_orchestrator(tmp_path: Path) -> None:
    cfg = load_config(None, BASE)
    summary = run_simulation(cfg, tmp_path, echo=False)
    run_dir = Path(summary["run_dir"])
    rows = round_rows(run_dir)
    saved = load_config(run_dir / "config.yaml")  # the resolved config the run used
    log = RoundLog.open(run_dir / "rounds.sqlite", experiment_id(saved))
    try:
        recs = log.records(0)
    finally:
        log.close()
    assert [r.t for r in recs] == [0, 1, 2, 3]
    assert [r.seed for r in recs] == [round_seed(cfg.run.seed, t) for t in range(4)]
    # The metrics row of round t is the orchestrator's (round t + 1), with the record's ĝ.
    assert [(r["round"], r["g_hat"], r["active"]) for r in rows] == \
        [(rec.t + 1, rec.g_hat, list(rec.active)) for rec in recs]
    assert all(r["expected"] == [0, 1, 2] and r["missing"] == [] for r in rows)


@pytest.fixture(scope="module")
def trainer() -> ZOTrainer:
    return ZOTrainer(load_config(None, BASE))


def test_node_views_share_one_copy_and_refuse_a_diverging_update(trainer: ZOTrainer) -> None:
    shared = SharedWeights(trainer)
    a, b, replica = shared.view(0), shared.view(1), shared.view()
    seed = round_seed(7, 0)
    g = trainer.cfg.zo.clip
    ga, gb = a.compute_scalar(0, seed), b.compute_scalar(0, seed)
    assert [ga, gb] == trainer.local_scalars(seed)[:2]  # one evaluation serves both nodes
    replica.apply_update(seed, 0.5, trainer.cfg.zo.lr)  # the copy's update
    before = replica.model_hash()
    a.apply_update(seed, 0.5, trainer.cfg.zo.lr)  # the same update: nothing applied again
    assert replica.model_hash() == before and a.model_hash() == before
    with pytest.raises(RuntimeError, match="would no longer share one model"):
        b.apply_update(seed, 0.25, trainer.cfg.zo.lr)
    with pytest.raises(RuntimeError, match="not the shared copy's"):
        b.compute_scalar(1, round_seed(7, 1))  # b is behind the copy
    assert abs(ga) <= g and abs(gb) <= g


def _cfg(*overrides: str) -> ExperimentConfig:
    return load_config(None, [*BASE, *overrides])


def _round(cfg: ExperimentConfig, g: np.ndarray, t: int = 0) -> tuple[float, dict]:
    air = SimulatedAir()
    ap = SimulatedApPhy(cfg, air)
    nodes = [SimulatedNodePhy(cfg, k, air) for k in range(cfg.nodes.count)]
    plan = ap.plan(t, list(range(len(nodes))))
    assert plan.tx_sample >= 0  # a frame: every node is scheduled, READY carries no scalar
    for k, n in enumerate(nodes):
        n.transmit(t, float(g[k]), None)
    res = ap.receive(t, 0, plan, {k: None for k in range(len(nodes))})
    return res.g_hat, ap.round_metrics()


def test_digital_local_noise_is_each_nodes_entry_of_the_rounds_draw() -> None:
    cfg = _cfg("run.method=zo_digital")
    g = np.array([0.3, -0.7, 0.9])
    g_hat, m = _round(cfg, g, t=5)
    sigma = SimulatedApPhy(cfg, SimulatedAir()).sigma
    assert sigma is not None and sigma > 0
    rng = np.random.default_rng(np.random.SeedSequence([cfg.run.seed, 3, 5]))
    words = (g + rng.normal(0.0, sigma, size=3)).astype(np.float32)
    assert g_hat == float(np.mean(words.astype(np.float64)))
    assert m["mse_closed_form"] == sigma**2 / 3 and m["n_active"] == 3


def test_noiseless_and_exact_digital_aggregate_the_scalars() -> None:
    g = np.array([0.3, -0.7, 0.9])
    assert _round(_cfg("run.method=zo_noiseless"), g)[0] == float(np.mean(g))
    g_hat, m = _round(_cfg("run.method=zo_digital", "privacy.enabled=false"), g)
    assert g_hat == float(np.mean(g.astype(np.float32)))
    assert m["sq_err"] == (g_hat - float(np.mean(g))) ** 2


def test_the_simulated_phy_refuses_the_first_order_baseline() -> None:
    with pytest.raises(ValueError, match="run.method: 'fo_fedavg'"):
        SimulatedApPhy(_cfg("run.method=fo_fedavg", "privacy.enabled=false"), SimulatedAir())


def test_a_failing_node_stops_the_run_with_its_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(SimulatedNodePhy):
        def transmit(self, t: int, scalar: float | None, sched: object) -> None:
            if self.node == 1 and t == 1:
                raise OSError("node 1: simulated radio failure")
            super().transmit(t, scalar, None)

    monkeypatch.setattr(sim_run, "SimulatedNodePhy", Broken)
    with pytest.raises(OSError, match="simulated radio failure"):
        run_simulation(load_config(None, BASE), tmp_path, echo=False)


def test_plan_is_the_baseband_plan_for_the_same_channel_draw() -> None:
    from pairzero.phy.baseband import BasebandApPhy

    cfg = _cfg("privacy.enabled=false")
    sim = SimulatedApPhy(cfg, SimulatedAir()).plan(3, [0, 2])
    base = BasebandApPhy(cfg).plan(3, [0, 2])
    assert (sim.eta, sim.sigma_a) == (base.eta, base.sigma_a)
    assert isinstance(sim, RoundPlan) and sim.tx_sample == 0
