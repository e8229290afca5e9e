"""Benchmarks, each a module run from the project's root: ``.venv/bin/python -m bench.bench_scrape``.

Run as modules, they import the tests' launchers and data (:mod:`tests.processes`,
:mod:`tests.postgres_server`, :mod:`tests.loki_server`) as the package they are, with no edit
of ``sys.path``.
"""
