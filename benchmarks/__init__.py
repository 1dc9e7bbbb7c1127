"""Benchmarks: this store against the Agents SDK's SQLAlchemySession and a raw-driver floor.

Run ``python -m benchmarks.run --help`` from the repository root.
"""
