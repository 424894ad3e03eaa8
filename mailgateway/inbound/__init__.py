"""Inbound pipeline: the pure stages (parse, forwards, threads) and the worker running them."""
