"""An Azure Resource Manager emulator for the containerservice API of the simulated AKS."""
