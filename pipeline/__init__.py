"""Graph building and running: options, sources, sinks, the CLI."""
