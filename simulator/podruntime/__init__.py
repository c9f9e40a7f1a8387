"""What the kubelet needs to run a pod's container as a local process: its log (``logs``), its
environment (``env``), its volumes as files (``volumes``) and the process itself in its own mount and
UTS namespaces (``process``). ``simulator.controllers.processes`` drives them for the cluster."""
