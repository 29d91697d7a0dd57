"""objmount's benchmark against rclone mount and s3fs (issue #5): `python -m bench`.

Not part of the package or the test suite; see bench/README.md.
"""
