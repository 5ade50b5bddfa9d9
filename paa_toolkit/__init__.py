"""paa-toolkit: Probabilistic Anchor Assignment with IoU Prediction (Kim & Lee, ECCV 2020).

The library: :mod:`paa_toolkit.assign` (Procedure 1 and baselines), :mod:`paa_toolkit.model`
(detector, Eq. 8 loss, score voting), :mod:`paa_toolkit.data`, :mod:`paa_toolkit.engine`,
and on top :mod:`paa_toolkit.viz` / :mod:`paa_toolkit.widgets` for the course notebooks.
"""

__version__ = "0.1.0"
