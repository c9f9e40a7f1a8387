"""The controllers of the simulated cluster, one object each, built and run by ``simulator.cluster.Cluster``.

``state`` holds what they share; ``changes`` is the store's listener; ``build`` makes the scenario's
nodes and workloads; ``scheduler``, ``workloads``, ``jobs``, ``admission``, ``pods`` (deletion and
eviction), ``disruption`` (budgets and invariants), ``kubelet`` with ``processes`` (pods run as local
processes) and ``pod_status`` (what both write), ``nodes`` (node lifecycle) and ``problem_detector``
are the controllers; ``common`` holds the constants and helpers they use.
"""
