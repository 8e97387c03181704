"""A lab rehearsal on one machine (``make rehearsal``, ``python -m rehearsal``).

The worked example of ``docs/running_on_usrps.md`` (section 6), extracted from the page and run
as written on hosts made of Linux network namespaces: ``ap`` and ``node<k>`` on a bridged LAN,
``air`` playing the radios' RF (``pairzero channel`` behind the emulated radios), each host with
its own working directory; files move between hosts only as the page tells a lab to move them.
The control plane between the AP and each node passes a user-space relay that delays it and
holds chunks for a retransmission timeout (this kernel has no ``netem``), under a LAN and a
campus profile, and in the campus run one node's link is cut and restored.

* :mod:`rehearsal.worked_example` -- the page's block -> host-tagged steps;
* :mod:`rehearsal.netns` -- namespaces, bridges, addresses, the relay's interception, ``tbf``,
  link cut, tidy-up;
* :mod:`rehearsal.relay` -- the delaying TCP relay (one per node host);
* :mod:`rehearsal.profiles` -- the network profiles;
* :mod:`rehearsal.scp` -- the stand-in for ``scp`` between the hosts' directories;
* :mod:`rehearsal.session` -- runs the steps on the hosts for one profile;
* :mod:`rehearsal.summary` -- figures from a run's files and logs;
* :mod:`rehearsal.cli` -- ``python -m rehearsal``.

Nothing in ``pairzero`` imports this package.
"""
