"""Physical layer: frame layout, TX burst builder, precoding and the AP receiver chain (numpy)."""

from pairzero.phy.frame import FrameLayout
from pairzero.phy.rx import BurstReceiver, NodeEstimate, RxResult
from pairzero.phy.tx import NodePrecoding, build_node_burst, compute_precoding, refine_cfo

__all__ = [
    "FrameLayout",
    "BurstReceiver",
    "NodeEstimate",
    "RxResult",
    "NodePrecoding",
    "build_node_burst",
    "compute_precoding",
    "refine_cfo",
]
