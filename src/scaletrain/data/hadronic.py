"""Charged pions: placeholder."""
