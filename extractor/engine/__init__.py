"""A run's state: the journal a resume trusts, its statistics, summary and live line."""
