"""The daemon's HTTP side: health, metrics and the JSON API for agent applications."""
