"""figures: one script per figure or table of the paper, and one entry that runs them all."""
