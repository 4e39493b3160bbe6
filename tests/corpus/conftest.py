# The corpus holds deliberately broken inputs (Python files that raise or do not parse):
# never collect or import them as tests or doctests.
collect_ignore_glob = ["*"]
