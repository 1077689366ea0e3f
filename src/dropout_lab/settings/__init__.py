"""Run settings and the shared vocabulary: what a run is, what names exist, how results are written.

Light on purpose: Hydra and OmegaConf, no torch, no pandas. Every other wing imports this one;
it imports no other wing.
"""
