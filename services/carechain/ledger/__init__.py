"""The ledger: signed transactions, validated and ordered into signed, hash-chained blocks."""
