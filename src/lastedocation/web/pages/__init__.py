"""Page routes, one module per section of the UI."""
