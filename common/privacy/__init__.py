"""Differential privacy for the networks that see real data: accounting, the site's ledger, DP-SGD.

- :mod:`common.privacy.accounting`: epsilon of a DP-SGD history and the noise for a target
  epsilon, a thin layer over Opacus' RDP and PRV accountants.
- :mod:`common.privacy.ledger`: the site's privacy ledger, one JSON file per site with a history
  per case, that accumulates each patient's epsilon across rounds, runs, datasets, crashes and
  restarts and refuses training that would bring any case over budget
  (:mod:`~common.privacy.ledger_format` its file, :mod:`~common.privacy.ledger_migration` the
  carrying over of version-1 ledgers, :mod:`~common.privacy.ledger_errors` its errors).
- :mod:`common.privacy.engine`: wraps a model's private network in Opacus' parts (Poisson sampling,
  per-sample clipping, Gaussian noise from an explicit generator).
"""
