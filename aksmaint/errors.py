"""Exception types. Transient errors are retried; everything else fails fast with a clear message."""


class MaintenanceError(Exception):
    """Base class of the errors this project raises on purpose."""


class ClusterAccessError(MaintenanceError):
    """The cluster cannot be used: unknown kubeconfig or context, unreachable, or credentials refused."""


class TransientApiError(MaintenanceError):
    """A failure worth retrying: throttling, a server error, a dropped connection."""


class HostCommandError(MaintenanceError):
    """A command on a node could not be run or did not finish."""


class HostPodGone(HostCommandError):
    """The pod running a host command was deleted before its result was read (e.g. its node rebooted)."""


class LockTimeout(MaintenanceError):
    """No reboot slot became free in time."""


class NodeBusy(MaintenanceError):
    """Another live run is working on the node."""
