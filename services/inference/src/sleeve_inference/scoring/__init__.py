"""Bulk scoring of catalogs: inputs (``catalog``), the local engine, exports and jobs.

``jobs.create_scoring_job`` validates a request before any work; ``jobs.run_scoring`` runs
(or resumes) it with the local engine; ``exports`` streams the results as JSONL, CSV or
Parquet.
"""
