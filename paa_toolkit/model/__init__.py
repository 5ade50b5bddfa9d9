"""The detector's parts: backbone + FPN, PAA head, losses, post-processing, and the PAADetector."""
