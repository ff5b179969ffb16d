"""Evaluation: the fixed test set (:mod:`.testset`) and the benchmark of every method on it (:mod:`.benchmark`).

Not imported by ``import cqshift_basicsr``; ``scripts/make_testset.py`` and ``scripts/benchmark.py`` call
``main`` of these modules.
"""
