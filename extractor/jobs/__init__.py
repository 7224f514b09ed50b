"""What the commands do: one runner, and the jobs it runs (invoices, ledger, updates, sync)."""
