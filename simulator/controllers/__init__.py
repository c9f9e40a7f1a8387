"""The controllers of the simulated cluster, one module each, combined by ``simulator.cluster.Cluster``.

``state`` holds what they share; ``changes`` is the store's listener; ``build`` makes the scenario's
nodes and workloads; ``scheduler``, ``workloads``, ``pods`` (deletion and eviction), ``disruption``
(budgets and invariants), ``kubelet``, ``nodes`` (node lifecycle) and ``problem_detector`` are the
controllers; ``common`` holds the constants and helpers they use.
"""
