"""Matplotlib figures built from what the library returns (paper Fig. 1, 3, 4a, 4b, 7; Table 2 right).

Every plotting function returns a ``matplotlib.figure.Figure`` and never calls ``show``.
"""
