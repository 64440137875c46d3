"""LoVT's localized downstream evaluation: dataset preparation, heads, metrics, the 18 tasks, protocol.

Entry points: `python -m lovt.evaluation.prepare` (datasets) and `python lovt/evaluate.py` (evaluation);
`lovt.evaluation.demo.run_demo_tasks` runs one detection and one segmentation task on the sample data.
"""
