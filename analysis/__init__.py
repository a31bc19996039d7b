"""Command-line entry points that write reports: `python -m analysis {heads,...} --help`."""
