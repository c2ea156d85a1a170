"""Figures and reports that people read."""
