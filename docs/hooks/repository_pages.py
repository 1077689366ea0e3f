"""MkDocs hook: serve two repository files as pages of the site, from where they live.

config/README.md stays beside the config it documents (tests/test_config_docs.py reads it there) and
bench/RESULTS.md beside the benchmarks; a copy under docs/ would drift from them.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

# Repository file -> its page in the site.
PAGES = {
    "config/README.md": "config-reference.md",
    "bench/RESULTS.md": "benchmark-results.md",
}


def on_files(files, config):
    root = Path(config.config_file_path).parent
    for source, page in PAGES.items():
        path = root / source
        if not path.is_file():
            raise FileNotFoundError(f"{source} is missing; mkdocs.yml's hook serves it as {page}")
        files.append(File.generated(config, page, abs_src_path=str(path)))
    return files
