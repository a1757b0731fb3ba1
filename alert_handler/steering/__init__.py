"""The operator's steering at run time: exclusions, silences, the confirmation gate."""
