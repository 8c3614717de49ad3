"""deepids: deep-learning intrusion and anomaly detection for network flows and host logs."""

__version__ = "0.1.0"
