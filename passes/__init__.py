"""Graph passes: each finds candidates, checks legality, rewrites, and reports what it did."""
