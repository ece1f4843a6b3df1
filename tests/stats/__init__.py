"""Statistical tests of the sampled estimates (issue 2): unbiasedness of the Horvitz-Thompson
sums per size class, per domain and per site, against exact counts, with tolerances derived from
the estimator's variance (docs/statistics.md)."""
