"""Privacy charged for what was transmitted and measured (pairzero.ota.charging), on the round
protocol of the radio path (pairzero.phy.round) over the numpy stand-in for the front ends
(tests/test_ota_phy_rounds.py: Air), where the true channel and noise are known.

The confidence bounds are checked at their stated levels with fixed seeds; binomial counts get
tolerances of about 4 standard deviations.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from access_point.orchestrator import ApSettings, Orchestrator
from access_point.roundlog import RoundLog
from pairzero.config import load_config
from pairzero.ota.charging import (
    HOLD_BACK_ERRORS,
    MAX_PLANNING_BOUND,
    LedgerMismatch,
    NoiseFloor,
    PrivacyBudgetSpent,
    PrivacyLedger,
    RadioPrivacy,
    plan_payload,
    terms_of,
)
from pairzero.ota.privacy import PrivacyRule, epsilon_from_mu
from pairzero.phy.frame import FrameLayout
from pairzero.phy.round import ApRoundPhy, NodeRoundPhy
from pairzero.protocol.messages import (
    Join,
    JoinReject,
    Precoding,
    PrivacyTerms,
    Schedule,
    decode,
    encode,
    make,
)
from pairzero.protocol.testing import ConstantPlanner, IdealApPhy, QuadraticTrainer
from pairzero.protocol.transport import InProcHub
from tests.test_ota_phy_rounds import Air

GAINS = [0.9 * np.exp(0.7j), 1.3 * np.exp(-2.1j), 0.6 * np.exp(2.8j)]
NOISE = 1e-3  # true complex noise variance per sample of Air


def _cfg(*extra: str):
    return load_config(None, ["nodes.count=3", "channel.snr_db=30.0", "zo.clip=1.0", "run.rounds=40",
                              *extra])


def _radio(cfg, ledger: Path | None = None):
    air = Air(GAINS, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], noise_var=NOISE, seed=5)
    ap = ApRoundPhy(cfg, air, shared_reference=True, realtime=True)
    if ledger is not None:
        ap.attach_ledger(str(ledger))
    nodes = [NodeRoundPhy(cfg, k, air.node(k)) for k in range(3)]
    return air, ap, nodes


def _round(air, ap, nodes, t: int, g=(0.4, -0.9, 0.7), send=(0, 1, 2), ready=(0, 1, 2)):
    plan = ap.plan(t, list(ready))
    for k in send:
        nodes[k].transmit(t, float(g[k]), plan.schedule_for(t, k))
    res = ap.receive(t, t, plan, {k: None for k in ready})
    air.now = plan.tx_sample + 10_000
    return plan, res


def _charges(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if '"charge"' in x]


def test_each_payload_is_charged_at_least_its_true_mu_and_close_to_it(tmp_path: Path) -> None:
    # Prepare: 3 nodes on a known channel; true mu_k = 2 G |h_k b_k| / sqrt(N0_y / 2)
    cfg = _cfg()
    air, ap, nodes = _radio(cfg, tmp_path / "privacy.jsonl")
    e_s = ap.payload_energy
    # Execute
    plans = [_round(air, ap, nodes, t)[0] for t in range(12)]
    # Assert: every precoded node charged once per payload round, never below its true mu
    charges = _charges(tmp_path / "privacy.jsonl")
    payload_plans = [p for p in plans if p.precoding]
    assert len(charges) == len(payload_plans) >= 10
    for plan, c in zip(payload_plans, charges, strict=True):
        assert plan.noise_std == 0.0  # privacy-limited at 30 dB: no artificial noise needed
        for k, pre in plan.precoding.items():
            true_mu = 2 * 1.0 * abs(GAINS[k] * complex(pre.b_re, pre.b_im)) / math.sqrt(NOISE / e_s / 2)
            charged = c["mu"][str(k)]
            assert charged >= true_mu
            # conservative by the confidence bounds only (noise floor over >= 1 frame, pilot error)
            assert charged <= 1.5 * true_mu
    # and the charged epsilon stays within the target over all rounds
    assert ap.eps_spent() <= cfg.privacy.epsilon * (1 + 1e-9)


def _plans(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if '"plan"' in x]


def test_a_precoded_node_whose_pilot_is_absent_is_charged_its_worst_case_mu(tmp_path: Path, caplog) -> None:
    # Prepare: precoding established, then node 2 answers READY but sends nothing
    cfg = _cfg()
    air, ap, nodes = _radio(cfg, tmp_path / "privacy.jsonl")
    for t in range(3):
        _round(air, ap, nodes, t)
    # Execute
    with caplog.at_level(logging.WARNING):
        plan, res = _round(air, ap, nodes, 3, send=(0, 1))
    # Assert: node 2 was in the plan and is not in S_t; it may have sent its payload, so it is
    # charged at least what that would have cost (no artificial noise at 30 dB: receiver noise
    # only), at most its worst case
    assert 2 in plan.precoding and res.present == (0, 1)
    last = _charges(tmp_path / "privacy.jsonl")[-1]
    worst = _plans(tmp_path / "privacy.jsonl")[-1]["worst"]
    pre = plan.precoding[2]
    if_sent = 2 * 1.0 * abs(GAINS[2] * complex(pre.b_re, pre.b_im)) / math.sqrt(NOISE / ap.payload_energy / 2)
    assert if_sent <= last["mu"]["2"] <= worst["2"]
    assert "2" in last["planned"] and "pilot absent" in last["planned"]["2"]
    assert last["present"] == [0, 1]
    assert "charged their unmeasured privacy cost" in caplog.text


def test_a_frame_that_never_arrives_charges_every_precoded_node_its_planned_mu(tmp_path: Path) -> None:
    cfg = _cfg()
    air, ap, nodes = _radio(cfg, tmp_path / "privacy.jsonl")
    for t in range(3):
        _round(air, ap, nodes, t)
    before = ap.charges.charged.mu_total().copy()
    # Execute: round 3's window is lost (a capture timeout)
    plan = ap.plan(3, [0, 1, 2])
    air.lost.add(plan.tx_sample - 128)
    for k in range(3):
        nodes[k].transmit(3, 0.1, plan.schedule_for(3, k))
    res = ap.receive(3, 3, plan, {k: None for k in range(3)})
    # Assert: no aggregate, but every planned node charged its worst case (here: its plan, at
    # least; nothing of the frame is measured, so the planning noise floor is used)
    assert res.present == () and res.g_hat == 0.0
    after = ap.charges.charged.mu_total()
    worst = _plans(tmp_path / "privacy.jsonl")[-1]["worst"]
    for k in range(3):
        assert after[k] ** 2 == pytest.approx(before[k] ** 2 + worst[str(k)] ** 2, rel=1e-12)
        assert worst[str(k)] >= plan.precoding[k].mu


def test_an_ap_killed_between_transmission_and_commit_charges_the_lost_release(tmp_path: Path) -> None:
    # Prepare: 4 rounds, then round 4 planned (durable) and transmitted, and the AP dies
    cfg = _cfg()
    ledger = tmp_path / "privacy.jsonl"
    air, ap, nodes = _radio(cfg, ledger)
    for t in range(4):
        _round(air, ap, nodes, t)
    spent = ap.charges.charged.mu_total().copy()
    plan = ap.plan(4, [0, 1, 2])
    for k in range(3):
        nodes[k].transmit(4, 0.3, plan.schedule_for(4, k))
    ap.close()  # killed: no receive, no commit
    # Execute: a new AP on the same run directory
    restarted = ApRoundPhy(cfg, Air(GAINS, [0.0] * 3, [0.0] * 3, NOISE), shared_reference=True, realtime=True)
    restarted.attach_ledger(str(ledger))
    restarted.restore_accounting([])
    # Assert: the lost release is charged (its worst case), and settled: a second restart agrees
    mu = restarted.charges.charged.mu_total()
    worst = _plans(ledger)[-1]["worst"]
    for k in range(3):
        assert mu[k] ** 2 == pytest.approx(spent[k] ** 2 + worst[str(k)] ** 2, rel=1e-12)
    assert restarted.eps_spent() > float(np.max(ap.charges.epsilon()))
    again = ApRoundPhy(cfg, Air(GAINS, [0.0] * 3, [0.0] * 3, NOISE), shared_reference=True, realtime=True)
    again.attach_ledger(str(ledger))
    again.restore_accounting([])
    assert np.allclose(again.charges.charged.mu_total(), mu, rtol=1e-12)


def test_the_orchestrator_restores_the_privacy_account_before_round_0(tmp_path: Path) -> None:
    # A crash during round 0 leaves a plan and no committed round: the restart must charge it
    calls: list[list] = []

    class Phy(IdealApPhy):
        def restore_accounting(self, records) -> None:
            calls.append(list(records))

    hub = InProcHub()
    rl = RoundLog.open(tmp_path / "log.sqlite", "exp-r")
    settings = ApSettings("exp-r", 1, 1, QuadraticTrainer(0).manifest_digest(), 0.05, min_nodes=1,
                          start_timeout_s=0.0)
    orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), Phy())
    orch.stop()
    orch.run()
    assert calls == [[]]


def test_a_round_over_a_nodes_budget_leaves_it_out_and_a_spent_run_stops(tmp_path: Path, caplog) -> None:
    # Prepare: T = 3 rounds of budget; the protocol is asked for more payload rounds (as re-runs
    # after restarts would)
    cfg = _cfg("run.rounds=3")
    air, ap, nodes = _radio(cfg, tmp_path / "privacy.jsonl")
    # Execute / Assert
    with caplog.at_level(logging.WARNING), pytest.raises(PrivacyBudgetSpent, match="every node's privacy budget"):
        for t in range(12):
            _round(air, ap, nodes, t)
    assert "left out: privacy budget" in caplog.text
    # the AP's account and each node's own stay within the target
    eps = cfg.privacy.epsilon
    assert ap.eps_spent() <= eps * (1 + 1e-9)
    told = ap.charges.told.epsilon(cfg.privacy.delta)
    assert np.all(told <= eps * (1 + 1e-9))
    assert all(n.budget.epsilon() <= eps * (1 + 1e-9) for n in nodes)


def _schedule(t: int, mu: float, eta: float = 0.05, noise_var: float = 1e-4, noise_std: float = 0.0):
    pre = Precoding(b_re=1.0, b_im=0.0, cfo=0.0, delay=0.0, ref_index=0.0, mu=mu, noise_var=noise_var)
    return Schedule(t=t, node=0, tx_sample=1000 * (t + 1), eta=eta, noise_std=noise_std, sigma_a=0.0,
                    precoding=pre)


def _payload(layout: FrameLayout, burst: np.ndarray) -> complex:
    s = layout.payload_template
    a = layout.payload_start
    return complex(np.vdot(s, burst[a : a + len(s)]) / np.vdot(s, s).real)


def test_a_node_refuses_a_payload_that_would_exceed_its_budget_and_remembers(tmp_path: Path) -> None:
    # Prepare: T = 2; the AP tells mu = the per-round target each round
    cfg = _cfg("run.rounds=2")
    cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, 2)
    air = Air(GAINS, [0.0] * 3, [0.0] * 3, NOISE)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    node.attach_ledger(str(tmp_path / "edge0-privacy.jsonl"))
    # the node's own bound 2 G eta / sqrt(N0/2) is below what it is told
    eta = 0.5 * cal.mu_round * math.sqrt(1e-4 / 2) / 2
    sent = []
    for t in range(3):
        node.transmit(t, 0.8, _schedule(t, cal.mu_round, eta=eta))
        sent.append(_payload(node.layout, air.frames[0][1]))
    # Assert: two payloads, the third refused (pilots only) and reported
    assert abs(sent[0]) > 0.5 and abs(sent[1]) > 0.5 and sent[2] == 0
    events = node.take_events()
    assert [e.kind for e in events] == ["privacy_budget"] and events[0].t == 2
    assert node.budget.epsilon() == pytest.approx(cfg.privacy.epsilon, rel=1e-6)
    # a restarted node keeps its account and refuses at once
    again = NodeRoundPhy(cfg, 0, air.node(0))
    again.attach_ledger(str(tmp_path / "edge0-privacy.jsonl"))
    assert again.budget.payloads == 2
    again.transmit(3, 0.8, _schedule(3, cal.mu_round, eta=eta))
    assert _payload(again.layout, air.frames[0][1]) == 0


def test_a_node_counts_its_own_bound_when_the_ap_understates_mu(tmp_path: Path) -> None:
    cfg = _cfg("run.rounds=100")
    air = Air(GAINS, [0.0] * 3, [0.0] * 3, NOISE)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    eta, n0 = 0.001, 1e-4  # own bound 2 G eta / sqrt(N0/2) = 0.28, within mu* = 1.9
    node.transmit(0, 0.8, _schedule(0, mu=1e-6, eta=eta, noise_var=n0))
    assert node.budget.spent == pytest.approx(2 * 1.0 * eta / math.sqrt(n0 / 2), rel=1e-12)


def test_the_artificial_noise_a_node_adds_is_circular() -> None:
    # w ~ CN(0, 2 s^2): s^2 in each real dimension, as the accountant's isotropic noise
    cfg = _cfg()
    air = Air(GAINS, [0.0] * 3, [0.0] * 3, NOISE)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    s, n = 0.5, 400
    w = np.array([_payload(node.layout, node.burst(0.0, _schedule(t, 0.0, noise_std=s))) for t in range(n)])
    # sample variance of n draws: relative std sqrt(2/n) = 0.07; 5 sigma
    for part in (w.real, w.imag):
        assert abs(np.var(part) / s**2 - 1) < 5 * math.sqrt(2 / n)


def test_the_noise_floor_lower_bound_holds_at_its_level() -> None:
    # Prepare: 2000 frames of 100 CN(0, N0) samples; level 1 - p with p = 0.05
    rng = np.random.default_rng(11)
    n0, n, trials, p = 2.5e-3, 100, 2000, 0.05
    lows = []
    for _ in range(trials):
        nf = NoiseFloor(window=1)
        nf.add(math.sqrt(n0 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n)))
        lows.append(nf.lower(p))
    lows = np.array(lows)
    # Assert: violations ~ Binomial(2000, 0.05): 100 +- 9.7; 4 sigma
    assert abs(int(np.sum(lows > n0)) - trials * p) < 4 * math.sqrt(trials * p * (1 - p))
    # and E[lower] = N0 * 2n / chi2.ppf(1 - p, 2n) (std of the mean 0.1/sqrt(2000) relative)
    expect = 2 * n / chi2.ppf(1 - p, 2 * n)
    assert abs(lows.mean() / n0 - expect) < 5 * expect * 0.1 / math.sqrt(trials)


def test_the_precoding_error_bound_covers_the_next_frames_error() -> None:
    # Prepare: a node whose precoding error is CN(0, 0.2^2); 32 measured frames, then one more
    cal = PrivacyRule.from_target(8.0, 1e-5, 100)
    rng = np.random.default_rng(4)
    sigma, p, trials = 0.2, 1e-3, 2000
    misses = 0
    for _ in range(trials):
        rp = RadioPrivacy(cal, 1, 1.0, tail_prob=p)
        e = sigma * (rng.standard_normal(33) + 1j * rng.standard_normal(33)) / math.sqrt(2)
        for x in e[:32]:
            rp.record_error(0, abs(1 + x) - 1)
        misses += abs(1 + e[32]) > 1 + rp.error_bound(0)
    # Assert: misses need sigma_U < sigma (prob 1%) or a tail beyond sqrt(ln 1/p) (0.1%)
    assert misses / trials < 0.011 + 4 * math.sqrt(0.011 / trials)


def test_a_node_sends_pilots_only_while_its_precoding_error_bound_is_loose() -> None:
    # Prepare: three nodes whose measured precoding errors are the same size (rms 0.015), nodes
    # 0 and 2 measured over one frame, node 1 over eight: from one value the chi-square bound
    # is 419 x the rms (6.3), from eight 11.6 x (0.17)
    cal = PrivacyRule.from_target(8.0, 1e-5, 10)
    rp = RadioPrivacy(cal, 3, 1.0, tail_prob=1e-6)
    rp.record_error(0, 0.015)
    rp.record_error(2, 0.015)
    for _ in range(8):
        rp.record_error(1, 0.015)
    h = np.array([0.9 + 0.1j, 1.1 - 0.2j, 0.8 - 0.5j])
    n0y, est = 1e-3, 1e-6

    def plan(avail):
        return plan_payload(h, np.array(avail), n0y, rp, cal, 1.0, 1.0, est_err_var=est)

    # Execute: before the run's first payload, then after it
    first = plan([True, True, True])
    alone = plan([False, True, False])
    rp.open_round(0, alone.cost)
    later = plan([True, True, True])
    # Assert: before any payload, node 1 waits with nodes 0 and 2 (a first round of node 1 alone
    # would carry 3 x the noise on g_hat); after it, nodes 0 and 2 wait (their bounds named),
    # node 1 is planned exactly as alone, with an eta set by its own (tight) bound
    b = [rp.planning_bound(k, abs(h[k]), est) for k in range(3)]
    assert b[0] > MAX_PLANNING_BOUND > b[1] and b[2] > MAX_PLANNING_BOUND
    assert first.active == [] and first.waiting == {k: pytest.approx(b[k]) for k in range(3)}
    assert later.waiting == {0: pytest.approx(b[0]), 2: pytest.approx(b[2])}
    assert later.active == [1] and not later.refused
    assert later.power.eta == alone.power.eta
    assert later.power.eta == pytest.approx(cal.eta_priv(n0y, 1.0) * (1 + cal.error_bound) / (1 + b[1]))
    # and with a second measured error (bound 52 x 0.015 + r/|h| < 1) node 0 is planned too
    rp.record_error(0, 0.015)
    assert plan([True, True, True]).active == [0, 1]


def test_the_first_payload_goes_ahead_with_half_of_the_nodes_ready() -> None:
    # Prepare: four nodes, two measured over eight frames (bounds < 1), two over one (> 1)
    cal = PrivacyRule.from_target(8.0, 1e-5, 10)
    rp = RadioPrivacy(cal, 4, 1.0, tail_prob=1e-6)
    for k, n in enumerate((8, 1, 8, 1)):
        for _ in range(n):
            rp.record_error(k, 0.015)
    h = np.array([0.9 + 0.1j, 1.1 - 0.2j, 0.8 - 0.5j, 1.0 + 0j])
    # Execute
    pl = plan_payload(h, np.ones(4, dtype=bool), 1e-3, rp, cal, 1.0, 1.0, est_err_var=1e-6)
    three = plan_payload(h, np.array([True, True, False, True]), 1e-3, rp, cal, 1.0, 1.0,
                         est_err_var=1e-6)
    # Assert: 2 of 4 ready is enough (at most twice the noise of all four); 1 of 3 is not
    assert pl.active == [0, 2] and set(pl.waiting) == {1, 3}
    assert three.active == [] and set(three.waiting) == {0, 1, 3}


def test_a_node_on_a_fast_changing_channel_waits_for_three_measured_errors_only() -> None:
    # Prepare: precoding errors of 20 % between frames: the bound stays above 1 however many
    # are measured (3.7 x sigma_U >= 2 x 0.2 x 1.41 x 3.7)
    cal = PrivacyRule.from_target(8.0, 1e-5, 10)
    rp = RadioPrivacy(cal, 1, 1.0, tail_prob=1e-6)
    h = np.array([1.0 + 0j])
    active = []
    for _ in range(HOLD_BACK_ERRORS + 1):
        rp.record_error(0, 0.2)
        pl = plan_payload(h, np.array([True]), 1e-3, rp, cal, 1.0, 1.0, est_err_var=1e-6)
        active.append((rp.error_history(0), pl.active, bool(pl.waiting)))
    # Assert: pilots only while fewer than HOLD_BACK_ERRORS errors are known, then precoded
    # with the bound it has (waiting would hardly tighten it)
    assert rp.planning_bound(0, 1.0, 1e-6) > MAX_PLANNING_BOUND
    assert active == [(n, [] if n < HOLD_BACK_ERRORS else [0], n < HOLD_BACK_ERRORS)
                      for n in range(1, HOLD_BACK_ERRORS + 2)]


def test_a_ledger_of_other_privacy_terms_is_refused_naming_the_field(tmp_path: Path) -> None:
    cfg = _cfg()
    PrivacyLedger(tmp_path / "p.jsonl", terms_of(cfg)).close()
    other = terms_of(_cfg("zo.clip=2.0"))
    with pytest.raises(LedgerMismatch, match=r"zo.clip \(G\) 2.0 vs 1.0"):
        PrivacyLedger(tmp_path / "p.jsonl", other)


def _join_reply(terms: PrivacyTerms | None, exp: str = "exp-j") -> JoinReject | object:
    hub = InProcHub()
    settings = ApSettings("exp-j", 1, 3, QuadraticTrainer(0).manifest_digest(), 0.05, node_count=2,
                          terms=PrivacyTerms(True, 1.0, 8.0, 1e-5, 3))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rl = RoundLog.open(Path(d) / "log.sqlite", "exp-j")
        orch = Orchestrator(settings, hub.server(), rl, ConstantPlanner(), IdealApPhy())
        client = hub.client("n0")
        client.send(encode(make(exp, 0, Join(0, QuadraticTrainer(0).manifest_digest(), "", "", 0, terms))))
        orch._pump(0.1)
        reply = decode(client.recv(1.0), exp).body
        rl.close()
    return reply


def test_a_node_with_another_clip_bound_is_refused_at_join_naming_it() -> None:
    reply = _join_reply(PrivacyTerms(True, 2.0, 8.0, 1e-5, 3))
    assert isinstance(reply, JoinReject) and "zo.clip (G) 2.0 vs 1.0" in reply.reason
    reply = _join_reply(PrivacyTerms(True, 1.0, 8.0, 1e-5, 3))
    assert not isinstance(reply, JoinReject)
    # a node started from another config (another experiment id) hears why, in its own id
    reply = _join_reply(PrivacyTerms(True, 1.0, 4.0, 1e-5, 3), exp="exp-other")
    assert isinstance(reply, JoinReject) and "privacy.epsilon 4.0 vs 8.0" in reply.reason
    reply = _join_reply(None)
    assert isinstance(reply, JoinReject) and "no privacy terms" in reply.reason


def test_budget_spent_message_names_the_target() -> None:
    cal = PrivacyRule.from_target(8.0, 1e-5, 4)
    rp = RadioPrivacy(cal, 2, 1.0, tail_prob=1e-6)
    refused = rp.admit({0: cal.mu_total * 1.01, 1: cal.mu_round})
    assert list(refused) == [0]
    assert f"> target {8.0:g}" in refused[0]
    assert epsilon_from_mu(cal.mu_total, 1e-5) == pytest.approx(8.0, rel=1e-9)


def test_a_node_in_every_round_spends_no_more_than_the_per_round_target(tmp_path: Path, caplog) -> None:
    # Privacy-limited rounds (30 dB, no artificial noise): eta is planned with each node's
    # measured error and pilot bounds, so each payload is planned at most at mu* / sqrt(T) and
    # T rounds fit every node's budget: no node is ever left out for it
    cfg = _cfg("run.rounds=16")
    cal = PrivacyRule.from_target(cfg.privacy.epsilon, cfg.privacy.delta, 16)
    air, ap, nodes = _radio(cfg, tmp_path / "privacy.jsonl")
    with caplog.at_level(logging.WARNING):
        plans = [_round(air, ap, nodes, t)[0] for t in range(16)]
    assert "privacy budget" not in caplog.text
    paid = [p for p in plans if p.precoding]
    assert len(paid) == 14  # the first two frames are pilots only (estimate, then its change)
    assert all(pre.mu <= cal.mu_round * (1 + 1e-9) for p in paid for pre in p.precoding.values())
    assert ap.eps_spent() <= cfg.privacy.epsilon * (1 + 1e-9)
