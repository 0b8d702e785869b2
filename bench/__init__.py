"""Benchmarks (`make bench` = `python -m bench`) and quality evaluations (`make eval`).

Every ``bench/<name>.py`` with a ``main(argv) -> int`` is a benchmark that ``python -m bench`` runs
(``python -m bench encoder`` runs one, ``--list`` shows them); ``eval_*`` modules measure retrieval
quality on a data set and are run by ``make eval`` instead.
"""
