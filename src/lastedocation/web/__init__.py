"""The web UI: server-rendered pages (Jinja2 + htmx), Persian first, over the same services."""
