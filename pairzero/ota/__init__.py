"""Over-the-air (OTA) aggregation, power control and differential privacy (pure numpy/scipy).

Modules:
    fading:    seeded block-fading channel, ChannelModel.draw(t) -> ChannelState.
    power:     per-round power control (the optimisation problem and its solution are in
               :mod:`pairzero.ota.power`'s docstring), plan_round(...) -> PowerPlan.
    privacy:   analytic Gaussian DP, noise multiplier z*, the per-round rule (PrivacyRule), per-node
               accountant.
    aggregate: receive / estimate / one-bit vote / closed-form MSE, ota_round(...) -> RoundResult.
    comm:      communication cost per round of pAirZero and baselines.
    pipeline:  OTARoundRunner, the per-round glue for the training loop.

Units: amplitudes are dimensionless (unit received amplitude <-> SNR = 1/N0), powers linear in
the same reference, N0 is the complex noise variance (N0/2 per real dimension).
"""

from pairzero.ota.aggregate import (
    RoundResult,
    analog_estimate,
    closed_form_mse,
    estimate_g_hat,
    one_bit_symbol,
    one_bit_vote,
    ota_round,
    realized_mu,
    receive,
)
from pairzero.ota.comm import CommCost, downlink_cost, uplink_bits_per_round, uplink_cost
from pairzero.ota.fading import ChannelModel, ChannelState, noise_var_from_snr_db
from pairzero.ota.pipeline import OTARoundRunner
from pairzero.ota.power import PowerPlan, amplitude_bound, plan_round
from pairzero.ota.privacy import (
    GaussianDPAccountant,
    PrivacyRule,
    delta_from_mu,
    epsilon_from_mu,
    estimation_error_bound,
    mu_from_epsilon_delta,
    noise_multiplier,
)

__all__ = [
    "ChannelModel",
    "ChannelState",
    "CommCost",
    "GaussianDPAccountant",
    "OTARoundRunner",
    "PowerPlan",
    "PrivacyRule",
    "RoundResult",
    "amplitude_bound",
    "analog_estimate",
    "estimate_g_hat",
    "closed_form_mse",
    "delta_from_mu",
    "downlink_cost",
    "epsilon_from_mu",
    "estimation_error_bound",
    "mu_from_epsilon_delta",
    "noise_multiplier",
    "noise_var_from_snr_db",
    "one_bit_symbol",
    "one_bit_vote",
    "ota_round",
    "plan_round",
    "realized_mu",
    "receive",
    "uplink_bits_per_round",
    "uplink_cost",
]
