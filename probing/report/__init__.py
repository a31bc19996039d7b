"""File writers and figures: every report a command writes (heads, probes, ablation, patching)."""
