"""ZOTrainer: the edge node's compute, as the control plane drives it."""

from __future__ import annotations

from pairzero.config import load_config
from pairzero.seeds import round_seed
from pairzero.trainer import ZOTrainer


def _cfg():
    return load_config(None, ["nodes.count=2", "zo.threads=1"])


def test_no_hash_while_a_round_is_pending_then_the_committed_one() -> None:
    # A node re-joining a restarted AP mid-round must not report the hash of θ − εz (the AP
    # would refuse it); after the update its hash equals a replica's that replayed the round.
    node, replica = ZOTrainer(_cfg(), [0]), ZOTrainer(_cfg(), [])
    seed = round_seed(1, 0)
    g = node.compute_scalar(0, seed)
    assert node.model_hash() == ""
    node.apply_update(seed, g)
    replica.replay([(seed, g)])
    assert node.model_hash() == replica.model_hash() != ""


def test_a_rerun_round_returns_the_same_scalar_without_recomputing() -> None:
    # After an AP restart the uncommitted round runs again with the same seed.
    node = ZOTrainer(_cfg(), [1])
    seed = round_seed(1, 0)
    first = node.compute_scalar(0, seed)
    again = node.compute_scalar(0, seed)
    assert again == first
    node.apply_update(seed, first)
    other = ZOTrainer(_cfg(), [1])
    other.replay([(seed, first)])
    assert node.model_hash() == other.model_hash()


def test_catch_up_resolves_a_pending_round_with_its_committed_g_hat() -> None:
    # The node computed round 0 but missed its UPDATE: the catch-up records start with it.
    node, replica = ZOTrainer(_cfg(), [0]), ZOTrainer(_cfg(), [])
    s0, s1 = round_seed(3, 0), round_seed(3, 1)
    node.compute_scalar(0, s0)
    records = [(s0, 0.25), (s1, -0.5)]
    node.replay(records)
    replica.replay(records)
    assert node.model_hash() == replica.model_hash()
