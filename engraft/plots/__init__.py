"""Figures (matplotlib, headless Agg backend)."""
