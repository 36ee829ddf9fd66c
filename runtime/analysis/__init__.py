"""From network output to what a result reports: quality gate, scale search, cells and counts, overlays."""
