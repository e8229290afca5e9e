"""Sources: how jobs of other platforms come in, each turned into the exporter's own job records.

A source only reads a vendor's payload and says which job record it is (or that
it is a notice with no job); everything after (validation, the store, metrics,
alerts, logs, the read API) is the one path every job takes. Pure: no Flask,
no store, no network.
"""
