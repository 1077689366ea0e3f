"""Analysis with pandas: run tables, claims and their statistics, theory checks, figures.

Imports the settings wing only.
"""
