"""No privacy charge below the truth when a node holds its payload back, a frame is lost, or a
pilot is detected where there was none (pairzero.ota.charging, pairzero.phy.round), on the
numpy stand-in for the radios (tests/test_ota_phy_rounds.py: Air), where the true channel and
noise are known.

The true mu of node k in a round is 2 A |h_k b_k| / sqrt(N0_y/2 + s^2 sum_{j in S_true}
|h_j b_j|^2), S_true the nodes whose payload *and* noise share went out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pairzero.config import load_config
from pairzero.ota.charging import NodeBudget, RadioPrivacy
from pairzero.ota.privacy import PrivacyRule
from pairzero.phy.frame import FrameLayout
from pairzero.phy.round import ApRoundPhy, NodeRoundPhy
from pairzero.phy.rx import BurstReceiver
from pairzero.phy.tx import build_node_burst
from pairzero.protocol.interfaces import ReadyTiming
from pairzero.protocol.messages import Precoding, Schedule
from sync.estimation import presence_threshold
from tests.test_ota_phy_rounds import Air

K = 6
GAINS = [0.9 * np.exp(0.7j), 1.3 * np.exp(-2.1j), 0.6 * np.exp(2.8j), 1.1 * np.exp(-0.4j),
         0.8 * np.exp(1.9j), 1.0 * np.exp(-2.9j)]
NOISE = 1e-3  # true complex noise variance per sample of Air
G = (0.4, -0.9, 0.7, 0.2, -0.3, 0.5)
FLOOR_FACTOR = 4.0  # eta floor over eta_priv: the artificial noise is ~15 x the receiver's


def _noisy_cfg(rounds: int = 40):
    """K = 6 nodes at 30 dB with an eta floor 4 x the privacy-limited eta: each node adds a
    noise share, and the shares make up most of the noise that protects every node."""
    base = ["nodes.count=6", "channel.snr_db=30.0", "zo.clip=1.0", f"run.rounds={rounds}"]
    cfg = load_config(None, base)
    cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, rounds)
    lay = FrameLayout(cfg.phy, K)
    e_s = float(np.vdot(lay.payload_template, lay.payload_template).real)
    floor = FLOOR_FACTOR * cal.eta_priv(NOISE / e_s, 1.0)
    return load_config(None, [*base, f"privacy.eta_floor={floor!r}"]), e_s


def _radio(cfg, ledger: Path):
    air = Air(GAINS, [0.0] * K, [0.0] * K, noise_var=NOISE, seed=8)
    ap = ApRoundPhy(cfg, air, shared_reference=True, realtime=True)
    ap.attach_ledger(str(ledger))
    nodes = [NodeRoundPhy(cfg, k, air.node(k)) for k in range(K)]
    return air, ap, nodes


def _round(air, ap, nodes, t: int, send=tuple(range(K)), timing: ReadyTiming | None = None):
    plan = ap.plan(t, list(range(K)), timing)
    for k in send:
        nodes[k].transmit(t, G[k], plan.schedule_for(t, k))
    res = ap.receive(t, t, plan, {k: None for k in range(K)})
    air.now = plan.tx_sample + 10_000
    return plan, res


def _last(path: Path, kind: str) -> dict:
    return [json.loads(x) for x in path.read_text().splitlines() if f'"{kind}"' in x][-1]


def _true_mu(plan, k: int, sent: list[int], e_s: float) -> float:
    hb = {j: abs(GAINS[j] * complex(plan.precoding[j].b_re, plan.precoding[j].b_im)) for j in sent}
    var = NOISE / e_s / 2 + plan.noise_std**2 * sum(v**2 for v in hb.values())
    return 2 * 1.0 * hb[k] / math.sqrt(var)


def test_a_node_that_refuses_its_payload_sends_nothing_and_the_others_are_charged_at_least_their_true_mu(
        tmp_path: Path) -> None:
    # Prepare: nodes 2..5 have spent their whole budget on their own account (an earlier run);
    # the AP is not told (no READY report), so it precodes them all
    cfg, e_s = _noisy_cfg()
    ledger = tmp_path / "privacy.jsonl"
    air, ap, nodes = _radio(cfg, ledger)
    for k in range(2, K):
        nodes[k].budget.charge(-1, nodes[k].budget.mu_budget)
    for t in range(2):  # pilot frames: estimates, then their change
        _round(air, ap, nodes, t)
    # Execute
    plan, res = _round(air, ap, nodes, 2)
    # Assert: all six were planned with noise shares; the four refused and sent silence
    assert sorted(plan.precoding) == list(range(K)) and plan.noise_std > 0
    assert all(e.kind == "privacy_budget" for k in range(2, K) for e in nodes[k].take_events())
    # S_t is the two whose payload went out, and g_hat divides by 2
    assert res.present == (0, 1)
    y = ap.last_rx.y
    assert res.g_hat == pytest.approx(y.real / (2 * plan.eta), rel=1e-12)
    # the two are charged from the frame, counting only the two noise shares that went out:
    # at least their true mu (within the confidence margins above it)
    charge = _last(ledger, "charge")
    assert charge["present"] == [0, 1]
    for k in (0, 1):
        truth = _true_mu(plan, k, [0, 1], e_s)
        assert truth <= charge["mu"][str(k)] <= 1.5 * truth
    # the four silent ones may have sent (the AP cannot tell): each is charged at least what
    # its payload would have cost with the shares certain to have gone out, at most its worst
    worst = _last(ledger, "plan")["worst"]
    for k in range(2, K):
        assert _true_mu(plan, k, [0, 1, k], e_s) <= charge["mu"][str(k)] <= worst[str(k)]


def test_a_node_that_reports_its_account_spent_is_left_out_before_the_frame(tmp_path: Path, caplog) -> None:
    # Prepare: as above, but every node reports its own ledger's spend in READY
    cfg, _ = _noisy_cfg()
    air, ap, nodes = _radio(cfg, tmp_path / "privacy.jsonl")
    for k in range(2, K):
        nodes[k].budget.charge(-1, nodes[k].budget.mu_budget)

    def reports() -> ReadyTiming:
        return ReadyTiming(spent_mu={k: n.spent_mu() for k, n in enumerate(nodes)})

    for t in range(2):
        _round(air, ap, nodes, t, timing=reports())
    # Execute
    with caplog.at_level("WARNING"):
        plan, res = _round(air, ap, nodes, 2, timing=reports())
    # Assert: only nodes 0 and 1 are precoded (their shares sized for two), no node refuses
    assert sorted(plan.precoding) == [0, 1]
    assert res.present == (0, 1)
    assert not any(n.take_events() for n in nodes)
    assert "node 3 left out: privacy budget" in caplog.text


def test_an_unmeasured_charge_holds_whichever_other_shares_went_out(tmp_path: Path) -> None:
    # Prepare: noise shares carry most of the protection; only node 0 transmits and its frame
    # is lost, so nothing of the round can be measured
    cfg, e_s = _noisy_cfg()
    ledger = tmp_path / "privacy.jsonl"
    air, ap, nodes = _radio(cfg, ledger)
    for t in range(2):
        _round(air, ap, nodes, t)
    plan = ap.plan(2, list(range(K)))
    air.lost.add(plan.tx_sample - 128)
    nodes[0].transmit(2, G[0], plan.schedule_for(2, 0))
    # Execute
    ap.receive(2, 2, plan, {k: None for k in range(K)})
    # Assert: node 0's charge covers its release with its own noise share alone, which the plan
    # that assumed all six shares (what it was told) does not
    truth = _true_mu(plan, 0, [0], e_s)
    charged = _last(ledger, "charge")["mu"]["0"]
    assert plan.precoding[0].mu < truth <= charged


def test_the_budget_admits_a_node_only_if_its_worst_case_fits() -> None:
    # A node with room for its planned round but not for the round's worst case is left out
    cal = PrivacyRule.from_target(8.0, 1e-5, 10)
    rp = RadioPrivacy(cal, 2, 1.0, tail_prob=1e-6)
    rp.note_reported(0, math.sqrt(cal.mu_total**2 - 2 * cal.mu_round**2))
    assert rp.admit({0: 1.2 * cal.mu_round, 1: 1.2 * cal.mu_round}) == {}
    refused = rp.admit({0: 1.5 * cal.mu_round, 1: 1.5 * cal.mu_round})
    assert list(refused) == [0]
    # a report never lowers what the AP counts
    rp.note_reported(0, 0.0)
    assert list(rp.admit({0: 1.5 * cal.mu_round})) == [0]


def test_a_node_is_precoded_only_after_two_significant_pilots_in_a_row() -> None:
    cal = PrivacyRule.from_target(8.0, 1e-5, 10)
    rp = RadioPrivacy(cal, 1, 1.0, tail_prob=1e-6)
    rp.record_error(0, 0.01)
    rp.note_pilot(0, True)
    assert not rp.precodable(0)
    rp.note_pilot(0, True)
    assert rp.precodable(0)
    rp.note_pilot(0, False)  # absent, or a statistic noise could have made
    assert not rp.precodable(0)
    rp.note_pilot(0, True)
    assert not rp.precodable(0)


def test_a_noise_only_pilot_passes_the_significance_test_at_most_at_its_tail_probability() -> None:
    # Prepare: the real receiver on frames where node 1 sends nothing; significance at p = 0.02
    cfg = load_config(None, ["nodes.count=2", "channel.snr_db=20.0"])
    lay = FrameLayout(cfg.phy, 2)
    rx = BurstReceiver(lay)
    rng = np.random.default_rng(21)
    p, trials = 0.02, 1500
    thr = presence_threshold(2 * rx.search + 1, p)
    burst = build_node_burst(lay, 0, None, None, frame_start=0)
    passed = 0
    for _ in range(trials):
        x = np.zeros(len(burst) + 400, dtype=complex)
        x[200:200 + len(burst)] = burst
        noise = math.sqrt(0.01 / 2) * (rng.standard_normal(len(x)) + 1j * rng.standard_normal(len(x)))
        res = rx.process((x + noise).astype(np.complex64), 0, expected_start=200)
        passed += res.nodes[1].statistic > thr
    # Assert: a union bound over the delay search: passes <= p (binomial: 4 sigma over)
    assert passed / trials <= p + 4 * math.sqrt(p * (1 - p) / trials)


def _sched(t: int, b: float, mu: float, eta: float = 0.05) -> Schedule:
    pre = Precoding(b_re=b, b_im=0.0, cfo=0.0, delay=0.0, ref_index=0.0, mu=mu, noise_var=1e-4)
    return Schedule(t=t, node=0, tx_sample=1000 * (t + 1), eta=eta, noise_std=0.0, sigma_a=0.0,
                    precoding=pre)


def test_a_node_counts_a_precoding_from_a_far_weaker_gain_estimate_at_what_it_would_cost() -> None:
    # Prepare: three payloads precoded from a gain estimate of 0.5 (|b| = eta / 0.5), then one
    # from a noise-level estimate 0.02 (|b| 25 x larger), as a false detection would give
    cfg = load_config(None, ["nodes.count=3", "zo.clip=1.0", "run.rounds=400",
                             "nodes.power_budget=1e6"])
    air = Air(GAINS[:3], [0.0] * 3, [0.0] * 3, NOISE)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    eta = 1e-4
    told = 2 * eta / math.sqrt(1e-4 / 2)  # what the AP tells: its own bound at gain eta
    for t in range(3):
        node.transmit(t, 0.5, _sched(t, eta / 0.5, told, eta))
    before = node.budget.spent_sq
    # Execute
    node.transmit(3, 0.5, _sched(3, eta / 0.02, told, eta))
    # Assert: counted at 25 x what it was told (the gain its last precodings implied)
    assert math.sqrt(node.budget.spent_sq - before) == pytest.approx(25 * told, rel=1e-9)


def test_a_node_refuses_a_precoding_above_its_power_budget() -> None:
    cfg = load_config(None, ["nodes.count=3", "zo.clip=1.0", "nodes.power_budget=1.0"])
    air = Air(GAINS[:3], [0.0] * 3, [0.0] * 3, NOISE)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    node.transmit(0, 0.5, _sched(0, 1.5, 1e-3))
    (ev,) = node.take_events()
    assert ev.kind == "privacy_budget" and "power budget" in ev.detail
    assert not np.any(air.frames[0][1])  # silence: no pilot, no payload
    assert node.budget.payloads == 0


def test_the_node_budget_bound_uses_the_largest_recently_implied_gain() -> None:
    cal = PrivacyRule.from_target(8.0, 1e-5, 100)
    nb = NodeBudget(cal, 1.0)
    base = nb.cost(0.0, 0.01, 0.0, 1e-4, b_abs=0.01 / 0.8)
    assert base == pytest.approx(2 * 0.01 / math.sqrt(1e-4 / 2), rel=1e-12)
    nb.remember(0.01, 0.01 / 0.8)
    nb.remember(0.01, 0.01 / 0.4)
    # a precoding from gain 0.4 now counts at the 0.8 remembered: twice the AP's eta
    assert nb.cost(0.0, 0.01, 0.0, 1e-4, b_abs=0.01 / 0.4) == pytest.approx(2 * base, rel=1e-12)
