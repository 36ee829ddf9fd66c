"""smearscope: the command-line entry point that composes the project's packages."""

__version__ = "0.1.0"
