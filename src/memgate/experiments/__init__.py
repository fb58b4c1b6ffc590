"""Experiments: grid files (grid), running them (sweep) and turning finished runs into tables (report).

Launching and reporting never call each other: a sweep writes run directories, a report reads them.
"""
