"""Planning the workflow: the grids expanded into runs and packs, and the plan's estimate.

No torch and no pandas, so building Snakemake's DAG stays light. Imports the settings wing only.
"""
