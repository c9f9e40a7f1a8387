"""The AKS side of a cluster upgrade, by concern (import from the module, not from the package):

- ``versions``: the version rules (targets, the path one minor at a time, the skew of pools);
- ``operations``: the steps and their long-running AKS operations, started once and waited for;
- ``plan``: the preflight that turns the cluster's state and a target into the steps;
- ``node_check``: the nodes of a pool after its step;
- ``windows``: AKS's planned-maintenance windows;
- ``channel``: the node OS upgrade channel;
- ``cancellation``: the run's record of the operation it starts, and the abort of it on cancel.
"""
