"""Regularizers beside dropout."""
