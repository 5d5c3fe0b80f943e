"""What lies on disk: the table of a run's files (artifacts.py), the run directory's life and the runs
under a folder (runs.py), and checkpoints (checkpoints.py). It may import config (lazily, to read a
run's config) and the bottom modules.
"""
