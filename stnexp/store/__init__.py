"""What lies on disk: the table of a run's files (artifacts.py), the run directory's life and the runs
under a folder (runs.py), what stnexp may write there (files.py), locks (locks.py), env.json (env.py),
the logger and train.log (logs.py), the evaluations and their index (evals.py), checkpoints
(checkpoints.py), and the atomic writes every file goes through (atomic.py). It may import config
(lazily, to read a run's config) and the bottom modules.
"""
