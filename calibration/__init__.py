"""Power-alignment CLI: per-node TX gain and digital scale/phase at the AP."""
