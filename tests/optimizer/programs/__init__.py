"""Programs written only for the recognition tests: one of each kind, different from the demo
workloads in examples/workloads (which the rules were designed from). ``run(duration_s)`` each."""
