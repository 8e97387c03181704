"""Edge-node process: ZO scalar on the OPT model, symbol mapping, TX driver."""
