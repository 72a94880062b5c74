"""Time: one timer wheel for every timer of a worker (transactions, registrations, calls, campaigns)."""
