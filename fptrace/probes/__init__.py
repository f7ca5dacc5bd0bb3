"""Probes: kernel feature detection, the probe plan, and the BPF C (package data)."""
