"""`python -m bench.scale`: listing and walking containers of 100k and 1M objects."""
