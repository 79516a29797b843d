"""Tables (Markdown, LaTeX, CSV), plots and exported results with provenance."""
