"""Reports of sweep results: tables, figures, Markdown and HTML."""
