"""The cross-utility clearinghouse of seed 1.4.1: roaming registry, authorization, charge
transactions and settlement between member utilities."""
