"""Deadline Cloud: the job bundle writer (``stmpo bundle``) and job fonts with
per-session leases (``stmpo fonts``).

Runs on the submitting machine (bundle) and inside OpenJD environment actions on the
worker (fonts).
"""
