"""Outbound mail: render, sign, send."""
