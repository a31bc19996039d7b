"""File writers and figures: each takes results and an output folder, and writes Markdown, CSV, JSON and PNG.

`probes`: the probe reports (`python -m analysis probe`). The library computes; these modules only write.
"""
