"""Simulations: scenarios, the engine, metrics and plots, the demo."""
