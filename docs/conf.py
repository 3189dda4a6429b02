"""Sphinx configuration of the diffsol-pytorch documentation (``make docs``).

The pages are Markdown (MyST-Parser); the API reference (api.md) is generated
from the package's NumPy-style docstrings by autodoc + napoleon, so the
package must be importable (``make setup`` installs it in editable mode).
"""

from __future__ import annotations

import os

project = "diffsol-pytorch"
author = "diffsol-pytorch developers"
copyright = "diffsol-pytorch developers"

try:
    from importlib.metadata import version as _version

    release = _version("diffsol-pytorch")
except Exception:  # not installed as a distribution
    release = "0+unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``#`` headings get anchors so pages can link to sections (page.md#anchor)
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc / napoleon: the docstrings are NumPy style
napoleon_google_docstring = False
napoleon_numpy_docstring = True
# "Attributes" sections become :ivar: fields, not attribute entries that
# would duplicate the documented properties
napoleon_use_ivar = True
autodoc_member_order = "bysource"
# the docstrings give the types in their words; signatures stay short
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": False}

# Types from other libraries (no intersphinx: the docs build offline) and the
# descriptive type words of NumPy-style docstrings are not link targets here.
nitpick_ignore_regex = [
    ("py:class", r"(torch|numpy|np|os|matplotlib|pytest|pathlib|datetime|typing)\..*"),
    ("py:class", r"(optional|array_like|array|tensor|callable|path-like|mapping|sequence|iterable)"),
    ("py:class", r"(tuple|list|dict|float|int|str|bool|None)\(.*"),
    ("py:class", r"(Figure|Axes|Tensor|DataFrame|ArrayLike)"),
]

html_theme = os.environ.get("DIFFSOL_DOCS_THEME", "alabaster")
html_title = "diffsol-pytorch"
