"""pAirZero testbed core: what every process shares and what runs without radios or sockets.

Federated zeroth-order fine-tuning of OPT language models with over-the-air aggregation.
"""

__version__ = "0.1.0"
