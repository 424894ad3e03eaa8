"""mailgateway: a self-hosted mail gateway for a team's conversations inbox."""

__version__ = "0.1.0"
