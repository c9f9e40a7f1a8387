"""An Azure Resource Manager emulator for the containerservice API of the simulated AKS."""

from simulator.arm.api import ArmAPI, route
from simulator.arm.emulator import ArmEmulator

__all__ = ["ArmAPI", "ArmEmulator", "route"]
