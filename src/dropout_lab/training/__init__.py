"""Training with torch: gates, models, the pack engine, data, checkpoints and the run entry points.

Imports the settings wing only.
"""
