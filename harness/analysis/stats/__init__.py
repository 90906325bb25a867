"""Statistics for paired base vs post-trained values, one module per job (thin over scipy and
statsmodels where they compute the same thing)."""
