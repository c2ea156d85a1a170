"""Differential privacy for the networks that see real data: accounting, the site's ledger, DP-SGD.

- :mod:`common.privacy.accounting`: epsilon of a DP-SGD history and the noise for a target
  epsilon, a thin layer over Opacus' RDP and PRV accountants.
- :mod:`common.privacy.ledger`: the site's privacy ledger, one JSON file per dataset, that
  accumulates epsilon across rounds, runs, crashes and restarts and refuses over-budget training.
- :mod:`common.privacy.engine`: wraps a model's private network in Opacus' parts (Poisson sampling,
  per-sample clipping, Gaussian noise from an explicit generator).
"""
