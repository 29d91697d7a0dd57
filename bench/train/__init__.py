"""`python -m bench.train`: PyTorch training reads over objmount and rclone mount (issue #12).

Not part of the package or the test suite; see bench/README.md.
"""
