"""Model zoo for ``regulab doctor`` tests: factories of broken and clean models."""
