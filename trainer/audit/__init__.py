"""The data and model audit: duplicates, leakage, label issues, behaviour, slices, truncation."""
