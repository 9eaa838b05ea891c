"""Pictures of graphs: `graphc viz` writes every pipeline stage of a model as one offline HTML
file (`write_html`) or as Graphviz DOT (`write_dot`). Layouts are computed in Python
(`layout.layered_layout`); no Graphviz binary and no network are needed."""

from .dot import to_dot, write_dot
from .html import render_html, write_html
from .layout import Layout, layered_layout
from .scene import Scene, build_scene

__all__ = ["Layout", "Scene", "build_scene", "layered_layout", "render_html", "to_dot",
           "write_dot", "write_html"]
