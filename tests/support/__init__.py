"""What the tests and the benchmarks share: launchers of real servers, fake clocks, samples and data.

Imported as ``tests.support.<module>`` by the tests of every tier and by ``bench/``; nothing here
is a test, and nothing here imports a test module (``tests/unit/test_import_graph.py``).
"""
