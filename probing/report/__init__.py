"""File writers and figures: every report a command writes (heads, probes, ablation, patching), and the
atomic, completion-marked output folders they write into (`outputs`). The library computes; these modules
only write."""
