"""Small utilities every stage reuses: the one registry (:mod:`~headprune.common.registry`), the one
``KEY=VALUE`` parser (:mod:`~headprune.common.assignments`), the one eval-mode context manager
(:mod:`~headprune.common.modes`), provenance and config hashes (:mod:`~headprune.common.provenance`),
device placement (:mod:`~headprune.common.devices`) and output folders (:mod:`~headprune.common.out_folder`).

Import the submodules; this package's ``__init__`` imports nothing.
"""
