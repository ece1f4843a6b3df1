"""Four small, real workloads of different kinds, shared by the optimizer demo and its tests.

Each module has ``run(duration_s)``, which does its kind of work for about that long in the calling
process (threads included) and returns a dict of what it did.
"""
KINDS = ("web_server", "data_processing", "game_loop", "ml_training")
