"""The PHY contract (pairzero.protocol.interfaces), the one factory (radio.factory), the mode
decided once (pairzero.phy.mode) and the one-bit tie rule.

Every member the AP and the nodes use on a PHY is declared on ApPhy / NodePhy and implemented by
every PHY; nothing in the processes probes a PHY or a front end with getattr/hasattr.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from pairzero.config import load_config
from pairzero.ota.aggregate import one_bit_symbol, ota_round
from pairzero.ota.fading import ChannelState
from pairzero.ota.power import PowerPlan
from pairzero.phy.baseband import BasebandApPhy, BasebandNodePhy
from pairzero.phy.frontend import RadioFrontEnd
from pairzero.phy.mode import phy_mode
from pairzero.phy.round import ApRoundPhy, NodeRoundPhy
from pairzero.protocol.interfaces import ApPhy, NodePhy
from pairzero.protocol.messages import Precoding, Schedule
from pairzero.protocol.testing import IdealApPhy
from tests.test_ota_phy_rounds import Air

ROOT = Path(__file__).resolve().parent.parent


def _members(proto: type) -> set[str]:
    """Attributes and methods a Protocol class declares (its own and its protocol bases')."""
    out: set[str] = set()
    for cls in proto.__mro__:
        if cls is object or cls.__name__ in ("Protocol", "Generic"):
            continue
        out |= set(getattr(cls, "__annotations__", {}))
        out |= {n for n, v in vars(cls).items()
                if not n.startswith("_") and (inspect.isfunction(v) or isinstance(v, property))}
    return out


def _phys() -> tuple[list[object], list[object]]:
    cfg = load_config(None, ["nodes.count=2", "privacy.enabled=false"])
    air = Air([1.0, 1.0], [0.0, 0.0], [0.0, 0.0], noise_var=1e-4)
    aps = [BasebandApPhy(cfg), IdealApPhy(), ApRoundPhy(cfg, air)]
    nodes = [BasebandNodePhy(), NodeRoundPhy(cfg, 0, air.node(0))]
    return aps, nodes


def test_every_phy_implements_every_member_of_its_protocol() -> None:
    # Prepare
    ap_members, node_members = _members(ApPhy), _members(NodePhy)
    aps, nodes = _phys()
    # Assert: the protocols declare what the AP and the nodes use ...
    assert {"digital", "scalar_bound", "receive", "restore_accounting", "eps_spent",
            "round_metrics", "attach_ledger", "close"} <= ap_members
    assert {"digital", "last_prep_s", "last_slack", "tx_s", "transmit", "take_events",
            "calibrate", "attach_ledger", "close"} <= node_members
    # ... and every implementation has all of it
    for phy in aps:
        assert {m for m in ap_members if not hasattr(phy, m)} == set(), type(phy).__name__
    for phy in nodes:
        assert {m for m in node_members if not hasattr(phy, m)} == set(), type(phy).__name__
    assert {"rate_factor", "tx_gain_db", "set_tx_gain", "now_index", "send", "capture",
            "close"} <= _members(RadioFrontEnd)


def _probes(path: Path) -> list[str]:
    """getattr/hasattr calls on something named like a PHY or a front end."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and node.args):
            target = ast.unparse(node.args[0])
            if any(w in target.lower() for w in ("phy", "frontend", "ota", "fe")):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_process_probes_a_phy_or_a_front_end() -> None:
    files = [p for d in ("access_point", "edge_node", "calibration", "radio", "pairzero/phy",
                         "pairzero/protocol") for p in (ROOT / d).rglob("*.py")]
    assert [hit for p in files for hit in _probes(p)] == []


@pytest.mark.parametrize(("overrides", "name", "flags"), [
    (["radio.mode=baseband"], "baseband", (False, False, False, True)),
    (["radio.mode=loopback"], "loopback", (True, True, False, True)),
    (["radio.mode=usrp", "radio.ap_args=type=emulated", "radio.emulated_rate_factor=0.5"],
     "emulated", (True, True, True, True)),
    (["nodes.count=3", "radio.mode=usrp", "radio.ap_args=type=b200",
      "radio.node_args=[type=b200,type=b200,type=b200]"],
     "usrp", (True, False, True, False)),
])
def test_the_mode_is_decided_once_from_the_config(overrides, name, flags) -> None:
    mode = phy_mode(load_config(None, overrides))
    assert mode.name == name
    assert (mode.over_the_air, mode.needs_emulator, mode.radios, mode.single_host) == flags
    assert mode.rate_factor == (0.5 if name == "emulated" else 1.0)


def test_the_factory_builds_the_baseband_path_without_radios() -> None:
    from radio.factory import build_ap_frontend, build_ap_phy, build_node_phy

    cfg = load_config(None, ["radio.mode=baseband", "nodes.count=2"])
    ap, node = build_ap_phy(cfg), build_node_phy(cfg, 1)
    assert isinstance(ap, BasebandApPhy) and ap.digital and ap.scalar_bound == cfg.zo.clip
    assert isinstance(node, BasebandNodePhy) and node.digital
    with pytest.raises(ValueError, match="radio.mode: 'baseband' has no radio"):
        build_ap_frontend(cfg)


def test_the_factory_builds_the_loopback_round_protocol() -> None:
    pytest.importorskip("zmq")
    from radio.factory import build_ap_phy, build_node_phy
    from radio.loopback import LoopbackFrontEnd

    cfg = load_config(None, ["nodes.count=2", "privacy.enabled=false"])
    ap, node = build_ap_phy(cfg), build_node_phy(cfg, 1)
    try:
        assert isinstance(ap, ApRoundPhy) and not ap.realtime and not ap.shared_reference
        assert isinstance(ap.frontend, LoopbackFrontEnd) and not ap.digital
        assert isinstance(node, NodeRoundPhy) and node.node == 1 and node.send_slack_s == 1.0
    finally:
        ap.close()
        node.close()


def _precoded(tx_sample: int) -> Schedule:
    pre = Precoding(b_re=0.5, b_im=0.0, cfo=0.0, delay=0.0, ref_index=0)
    return Schedule(t=0, node=0, tx_sample=tx_sample, eta=1.0, noise_std=0.0, sigma_a=0.0,
                    precoding=pre)


def test_one_bit_nodes_send_plus_one_for_a_zero_scalar_on_every_path() -> None:
    # Prepare: the radio node and the simulated round, one-bit scheme
    cfg = load_config(None, ["nodes.count=2", "ota.scheme=one_bit", "privacy.enabled=false"])
    air = Air([1.0, 1.0], [0.0, 0.0], [0.0, 0.0], noise_var=1e-4)
    node = NodeRoundPhy(cfg, 0, air.node(0))
    sched = _precoded(1000)
    # Execute / Assert: the frame of g = 0 is the frame of g = +1, not of -1 or of silence
    zero, plus, minus = (node.burst(g, sched) for g in (0.0, 1.0, -1.0))
    np.testing.assert_array_equal(zero, plus)
    assert not np.allclose(zero, minus)
    assert list(one_bit_symbol([0.0, -0.0, 0.3, -2.0])) == [1.0, 1.0, 1.0, -1.0]
    # ... and the simulation's round sends the same symbols: all-zero scalars vote +1
    h = np.ones(2, dtype=complex)
    state = ChannelState(h=h, h_est=h, noise_var=1e-12)
    plan = PowerPlan(active=np.ones(2, dtype=bool), eta=1.0, b=h, sigma_a=0.0, eta_pow=1.0,
                     eta_priv=np.inf, amplitude_bound=1.0, noise_var=1e-12, mu_design=0.0,
                     mu_target=np.inf, privacy_slack=0.0, floor_slack=0.0, limited_by="power")
    res = ota_round(np.zeros(2), state, plan, np.random.default_rng(0), scheme="one_bit")
    assert res.g_hat == 1.0 and res.y == pytest.approx(2.0)
