"""Reproduce and test the claims of 'the simplified math behind dropout' on MNIST and CIFAR-10."""

# The release, for a checkout run without an install; an installed package answers from its metadata
# (dropout_lab.cli.version). pyproject.toml and CITATION.cff carry the same number (tests/test_citation.py).
__version__ = "0.2.0"
