"""The paper: the LaTeX macros and tables written from claims.json.

Imports the settings wing only: the paper is written from claims.json and the configuration.
"""
