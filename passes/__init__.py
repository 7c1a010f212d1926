"""Graph passes: each finds candidates, checks legality, rewrites, and reports what it did;
each declares the checks it requires and ensures (:mod:`.contracts`)."""
