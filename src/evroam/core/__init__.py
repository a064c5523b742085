"""The shared vocabulary of every party: pure values, messages, tariffs and rating."""
