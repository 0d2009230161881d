"""Bulk scoring of catalogs: inputs (``catalog``), the local and Ray engines, exports and jobs.

``jobs.create_scoring_job`` validates a request before any work; ``jobs.run_scoring`` runs
(or resumes) it on its engine: ``engine`` on this machine, ``ray_engine`` on Ray Data (an
optional extra); ``exports`` streams the results as JSONL, CSV or Parquet.
"""
