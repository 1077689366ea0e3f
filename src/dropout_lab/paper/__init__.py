"""The paper: the LaTeX macros, tables and prose written from claims.json, the prose from paper/templates.

Imports the settings wing only: the paper is written from claims.json and the configuration.
"""
