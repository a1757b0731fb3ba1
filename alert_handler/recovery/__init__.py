"""The recovery loop: scheduling, admission, the jobs and their records, reconciliation."""
