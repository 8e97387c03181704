"""Control plane shared by the AP and the edge nodes: message schema, transports, CurveZMQ keys.

See :mod:`pairzero.protocol.messages` (wire format), :mod:`pairzero.protocol.transport`
(in-process and ZeroMQ transports), :mod:`pairzero.protocol.keys` (``pairzero keys``) and
:mod:`pairzero.protocol.interfaces` (what the ZO engine, OTA maths and PHY plug into).
"""
