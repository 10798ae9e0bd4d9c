"""datasweep: ML experiment sweeps on Kubernetes that never pay twice for the same result."""

__version__ = "0.1.0"

GROUP = "datasweep.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
