"""Radio front ends and the channel emulator: where samples meet hardware (or its emulation).

* :mod:`radio.factory` -- the one place a run's PHY is built for its mode (baseband, loopback,
  emulated USRP, USRP): ``build_ap_phy(cfg)``, ``build_node_phy(cfg, k)``;
* :mod:`radio.loopback` -- the loopback front end (ZeroMQ to the channel emulator);
* :mod:`radio.usrp` -- the USRP front end (gr-uhd), device-time alignment at a PPS edge;
* :mod:`radio.emulated` -- stand-ins for gr-uhd's blocks: the emulated USRP (``type=emulated``);
* :mod:`radio.emulator` -- the channel emulator flowgraph; :mod:`radio.blocks` its blocks and
  the front ends' (the ``.grc`` files in ``grc_flowgraphs/`` use the same blocks);
* :mod:`radio.emulator_cli` -- ``pairzero channel``, the emulator as a process.

The round protocol on top (:mod:`pairzero.phy.round`) sees only the front-end interface
(:mod:`pairzero.phy.frontend`).
"""
