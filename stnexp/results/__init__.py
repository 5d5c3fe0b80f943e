"""What is made of trained models: scoring (scoring.py) and the eval command (evaluation.py), what a
finished run writes (outputs.py), the paired and rectification analyses (analysis.py), result tables
(tables.py), figures (pictures.py), the report (report.py), the paper's Table 1 (paper.py) and variant
previews (preview.py). It may import config, data, models, store and the bottom modules; not training.
"""
