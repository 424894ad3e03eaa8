"""Inbound pipeline: pure stages (parse, forwards, origin, threads) and the worker that runs them."""
