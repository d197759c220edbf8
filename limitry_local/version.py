"""The package's version, in a module of its own: the edges (the CLI, the server's
OpenAPI document) read it without importing the whole package."""

__version__ = "0.2.0.dev0"
