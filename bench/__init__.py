"""Benchmarks, each a module run from the project's root: ``.venv/bin/python -m bench.bench_scrape``.

Run as modules, they import the tests' launchers and data (:mod:`tests.support.processes`,
:mod:`tests.support.postgres_server`, :mod:`tests.support.loki_server`) as the package they are, with no edit
of ``sys.path``.
"""
